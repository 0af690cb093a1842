/// A raw VM for `hyperctl boot`: guest memory, COM1, the i8042, a kernel and its boot state on one vCPU.
///
/// It is written against the `Hypervisor` protocol only, so every accelerator boots kernels the same way.
public enum RawMachine {
    /// The largest kernel or initrd file read into memory.
    static let maximumImageSize = 512 << 20

    /// Boots `request` on `hypervisor` with the console on `request.consoleOutput`, and returns how it ended:
    /// `.exited(0)` for a reset or power-off, `.timedOut` past the timeout.
    /// - Throws: `invalidArgument` for a bad image; `phaseFailed` for a triple fault or an accelerator failure,
    ///   naming the exit and the vCPU's RIP.
    /// - Parameter devices: extra MMIO devices to map (base, length, device), for tests and later virtio.
    public static func boot(_ request: BootRequest, on hypervisor: any Hypervisor,
                            devices: [(base: UInt64, length: UInt64, device: any BusDevice)] = []) throws(HyperError) -> SandboxExit {
        let image: [UInt8]
        if let builtin = request.kernelImage { image = builtin } else { image = try readImage(request.kernelPath, what: "kernel") }
        let memory = try GuestMemory(size: request.memoryBytes)
        let entry: PVHLoader.LoadedKernel.Entry
        let kernelEnd: UInt64
        let isBzImage = LinuxLoader.isBzImage(image)
        if isBzImage {
            let kernel = try LinuxLoader.load(image, into: memory)
            entry = .long(kernel.entry)
            kernelEnd = kernel.end
        } else if PVHLoader.isELF(image) {
            let kernel = try PVHLoader.load(image, into: memory)
            entry = kernel.entry
            kernelEnd = kernel.end
        } else {
            throw HyperError(.invalidArgument, "kernel: \(request.kernelPath) is neither an ELF (PVH) image nor a bzImage")
        }
        var initrd: (address: UInt64, size: UInt64)?
        if let path = request.initrdPath {
            let bytes = try readImage(path, what: "initrd")
            let size = UInt64(bytes.count)
            guard size < memory.size, (memory.size - size) & ~0xFFF > (kernelEnd + 0xFFF) & ~0xFFF else {
                throw HyperError(.invalidArgument, "initrd: \(Units.formatSize(size)) does not fit above the kernel in \(Units.formatSize(memory.size)) of memory")
            }
            let address = (memory.size - size) & ~0xFFF
            try memory.write(bytes, at: address)
            initrd = (address, size)
        }
        // A bzImage reads the zero page (rsi); a PVH kernel reads hvm_start_info (rbx). Both point at the RSDP.
        let rsdp = try ACPITables.write(into: memory, vcpus: request.cpus, virtioDevices: [])
        let bootData = isBzImage
            ? try LinuxLoader.writeZeroPage(image: image, into: memory, commandLine: request.commandLine, initrd: initrd, rsdp: rsdp)
            : try PVHLoader.writeStartInfo(into: memory, commandLine: request.commandLine, initrd: initrd, rsdp: rsdp)
        try BootLayout.writeDescriptorTables(into: memory)

        let machine = try hypervisor.makeVirtualMachine(memory: memory)
        let vcpu = try machine.makeVCPU(index: 0)
        var registers = X86Registers()
        switch entry {
        case let .pvh(address):
            try vcpu.setSpecialRegisters(BootLayout.protectedModeRegisters())
            registers.rip = UInt64(address)
            registers.rbx = bootData
        case let .long(address):
            try BootLayout.writeIdentityPageTables(into: memory)
            try vcpu.setSpecialRegisters(BootLayout.longModeRegisters())
            registers.rip = address
            registers.rsi = bootData
            registers.rsp = BootLayout.stackTop
            registers.rbp = BootLayout.stackTop
        }
        try vcpu.setRegisters(registers)

        let bus = MachineBus()
        let console = request.consoleOutput
        let serial = Serial16550 { bytes in try? HostSystem.writeAll(console, bytes) }
        serial.interrupt = { active in try? machine.setInterruptLine(BootLayout.serialInterrupt, active: active) }
        let keyboardController = I8042()
        keyboardController.onReset = { [unowned bus] in bus.requestedExit = .reset }
        try bus.mapPorts(BootLayout.serialPort, length: 8, to: serial)
        try bus.mapPorts(BootLayout.i8042Port, length: 5, to: keyboardController)
        for extra in devices { try bus.mapMemory(extra.base, length: extra.length, to: extra.device) }

        let deadline = request.timeout.map { HostSystem.monotonicNanoseconds() + UInt64(max(0, $0.nanoseconds)) }
        let exit = try vcpu.run(bus: bus, deadline: deadline)
        serial.flush()
        return try status(for: exit)
    }

    /// Maps a VM exit to the boot command's outcome.
    public static func status(for exit: VMExit) throws(HyperError) -> SandboxExit {
        switch exit {
        case .reset, .powerOff: return .exited(0)
        case .timedOut: return .timedOut
        case .halt: throw HyperError(.phaseFailed, "VM failure: the guest halted and nothing can wake it")
        case let .shutdown(rip): throw HyperError(.phaseFailed, "VM failure: triple fault (shutdown exit) at RIP 0x\(String(rip, radix: 16))")
        case let .failure(reason, rip): throw HyperError(.phaseFailed, "VM failure: \(reason) at RIP 0x\(String(rip, radix: 16))")
        }
    }

    static func readImage(_ path: String, what: String) throws(HyperError) -> [UInt8] {
        let bytes: [UInt8]
        do {
            bytes = try HostSystem.readFile(path, limit: maximumImageSize)
        } catch {
            throw HyperError(.invalidArgument, "\(what): \(error)")
        }
        guard !bytes.isEmpty else { throw HyperError(.invalidArgument, "\(what): \(path) is empty") }
        return bytes
    }
}
