/// A raw VM for `hyperctl boot`: guest memory, COM1, the i8042, a kernel and its boot state on one vCPU.
///
/// It is written against the `Hypervisor` protocol only, so every accelerator boots kernels the same way.
public enum RawMachine {
    /// Boots `request` on `hypervisor` with the console on `request.consoleOutput`, and returns how it ended:
    /// `.exited(0)` for a reset or power-off, `.timedOut` past the timeout.
    /// - Throws: `invalidArgument` for a bad image; `phaseFailed` for a triple fault or an accelerator failure,
    ///   naming the exit and the vCPU's RIP.
    /// - Parameter devices: extra MMIO devices to map (base, length, device), for tests and later virtio.
    public static func boot(_ request: BootRequest, on hypervisor: any Hypervisor,
                            devices: [(base: UInt64, length: UInt64, device: any BusDevice)] = []) throws(HyperError) -> SandboxExit {
        var image = request.kernelImage ?? []
        if request.kernelImage == nil { image = try GuestLoader.readImage(request.kernelPath, what: "kernel") }
        var initrd: [UInt8]?
        if let path = request.initrdPath { initrd = try GuestLoader.readImage(path, what: "initrd") }
        let memory = try GuestMemory(size: request.memoryBytes)
        let entry = try GuestLoader.load(kernel: image, kernelName: request.kernelPath, initrd: initrd, commandLine: request.commandLine,
                                         into: memory, vcpus: request.cpus, virtioDevices: [])
        let machine = try hypervisor.makeVirtualMachine(memory: memory)
        let vcpu = try machine.makeVCPU(index: 0)
        try vcpu.setSpecialRegisters(entry.specialRegisters)
        try vcpu.setRegisters(entry.registers)

        let bus = MachineBus()
        let console = request.consoleOutput
        let serial = try mapLegacyDevices(on: bus, machine: machine) { bytes in try? HostSystem.writeAll(console, bytes) }
        for extra in devices { try bus.mapMemory(extra.base, length: extra.length, to: extra.device) }

        let deadline = request.timeout.map { HostSystem.monotonicNanoseconds() + UInt64(max(0, $0.nanoseconds)) }
        let exit = try vcpu.run(bus: bus, deadline: deadline)
        serial.flush()
        return try status(for: exit)
    }

    /// Maps COM1 (its output to `consoleOutput`, its IRQ on `machine`) and the i8042 (whose reset line ends the
    /// run) on `bus`, as every x86 machine here has them; returns the serial port, to flush at the end.
    public static func mapLegacyDevices(on bus: MachineBus, machine: any VirtualMachine,
                                 consoleOutput: @escaping @Sendable ([UInt8]) -> Void) throws(HyperError) -> Serial16550 {
        let serial = Serial16550(output: consoleOutput)
        serial.interrupt = { active in try? machine.setInterruptLine(BootLayout.serialInterrupt, active: active) }
        let keyboardController = I8042()
        keyboardController.onReset = { [unowned bus] in bus.requestedExit = .reset }
        try bus.mapPorts(BootLayout.serialPort, length: 8, to: serial)
        try bus.mapPorts(BootLayout.i8042Port, length: 5, to: keyboardController)
        return serial
    }

    /// Maps a VM exit to the boot command's outcome.
    public static func status(for exit: VMExit) throws(HyperError) -> SandboxExit {
        switch exit {
        case .reset, .powerOff: return .exited(0)
        case .timedOut, .stopped: return .timedOut
        case .halt: throw HyperError(.phaseFailed, "VM failure: the guest halted and nothing can wake it")
        case let .shutdown(rip): throw HyperError(.phaseFailed, "VM failure: triple fault (shutdown exit) at RIP 0x\(String(rip, radix: 16))")
        case let .failure(reason, rip): throw HyperError(.phaseFailed, "VM failure: \(reason) at RIP 0x\(String(rip, radix: 16))")
        }
    }
}
