import Synchronization

/// The guest's serial console as the host keeps it: the last bytes, for error messages, and optionally a
/// copy to a file descriptor as they arrive.
public final class ConsoleLog: Sendable {
    private let tail = Mutex<[UInt8]>([])
    private let mirror: Int32?
    /// How much of the console is kept.
    static let capacity = 16 * 1024

    /// Creates a log that also copies everything to `mirror` when given (and closes it when done).
    public init(mirror: Int32? = nil) { self.mirror = mirror }

    deinit { if let mirror { HostSystem.closeDescriptor(mirror) } }

    func append(_ bytes: [UInt8]) {
        if let mirror { try? HostSystem.writeAll(mirror, bytes) }
        tail.withLock { kept in
            kept += bytes
            if kept.count > Self.capacity { kept.removeFirst(kept.count - Self.capacity) }
        }
    }

    /// The last `count` lines, for an error message.
    public func lastLines(_ count: Int) -> [String] {
        let text = String(decoding: tail.withLock { $0 }, as: UTF8.self)
        let lines = text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).map(String.init).filter { !$0.isEmpty }
        return Array(lines.suffix(count))
    }
}

/// A Linux microVM: guest memory, vCPUs on threads of their own, COM1, the i8042 (for reset) and
/// virtio-mmio devices wired to the in-kernel interrupt controller.
///
/// It is written against the `Hypervisor` protocol only.
public final class MicroVM: @unchecked Sendable {
    /// What to boot and how big the machine is.
    public struct Configuration: Sendable {
        public var kernel: [UInt8]
        public var kernelName: String
        public var initrd: [UInt8]?
        public var commandLine: String
        public var memoryBytes: UInt64
        public var vcpus: Int

        /// Creates a configuration.
        public init(kernel: [UInt8], kernelName: String, initrd: [UInt8]?, commandLine: String, memoryBytes: UInt64, vcpus: Int) {
            self.kernel = kernel
            self.kernelName = kernelName
            self.initrd = initrd
            self.commandLine = commandLine
            self.memoryBytes = memoryBytes
            self.vcpus = vcpus
        }
    }

    /// Where the virtio-mmio windows start (below the 32-bit PCI hole, as Firecracker puts them), one page each.
    public static let virtioBase: UInt64 = 0xD000_0000
    /// The first interrupt line of the virtio devices (after COM1's 4).
    public static let virtioFirstInterrupt: UInt32 = 5
    /// The most guest memory: RAM must end below the virtio windows.
    public static let maximumMemory: UInt64 = 3 << 30
    /// The most vCPUs (the interrupt controller's reach with the MADT we write).
    public static let maximumVCPUs = 64

    public let memory: GuestMemory
    public let console: ConsoleLog
    /// The virtio transports, in the order of the devices given.
    public let transports: [VirtioMMIOTransport]
    private let machine: any VirtualMachine
    private let vcpus: [any VirtualCPU]
    private let bus = MachineBus()
    private let serial: Serial16550
    private let threads = Mutex<[HostThread]>([])
    private let ended = Atomic<Bool>(false)
    /// What `start` was given, for `resume`.
    private let endHandler = Mutex<(@Sendable (Result<VMExit, HyperError>) -> Void)?>(nil)

    /// Builds the machine; nothing runs until `start`.
    public convenience init(_ configuration: Configuration, devices: [any VirtioDevice], console: ConsoleLog, on hypervisor: any Hypervisor) throws(HyperError) {
        guard configuration.memoryBytes >= 64 << 20, configuration.memoryBytes <= Self.maximumMemory else {
            throw HyperError(.invalidSpec, "memory: a microVM takes 64 MiB to \(Units.formatSize(Self.maximumMemory)); \(Units.formatSize(configuration.memoryBytes)) was asked")
        }
        guard (1...Self.maximumVCPUs).contains(configuration.vcpus) else {
            throw HyperError(.invalidSpec, "cpus: a microVM takes 1 to \(Self.maximumVCPUs) vCPUs; \(configuration.vcpus) was asked")
        }
        let memory = try GuestMemory(size: configuration.memoryBytes)
        let entry = try GuestLoader.load(kernel: configuration.kernel, kernelName: configuration.kernelName, initrd: configuration.initrd,
                                         commandLine: configuration.commandLine, into: memory, vcpus: configuration.vcpus,
                                         virtioDevices: Self.windows(count: devices.count))
        try self.init(memory: memory, vcpuCount: configuration.vcpus, devices: devices, console: console, on: hypervisor)
        try vcpus[0].setSpecialRegisters(entry.specialRegisters)
        try vcpus[0].setRegisters(entry.registers)
    }

    /// Rebuilds a machine from a snapshot taken by `captureSnapshot`, over `memory` (mapped from the
    /// snapshot's memory file), with the same kinds of devices in the same order; nothing runs until `start`.
    public convenience init(restoring snapshot: MachineSnapshot, memory: GuestMemory, devices: [any VirtioDevice], console: ConsoleLog,
                            on hypervisor: any Hypervisor) throws(HyperError) {
        guard (1...Self.maximumVCPUs).contains(snapshot.vcpus.count) else {
            throw HyperError(.invalidArgument, "snapshot: \(snapshot.vcpus.count) vCPUs is not a microVM's")
        }
        try self.init(memory: memory, vcpuCount: snapshot.vcpus.count, devices: devices, console: console, on: hypervisor)
        try machine.restoreState(snapshot.machine)
        for (vcpu, state) in zip(vcpus, snapshot.vcpus) { try vcpu.restoreState(state) }
        guard let serialState = snapshot.devices[Self.serialKey].flatMap(Serial16550.State.init(encoded:)) else {
            throw HyperError(.invalidArgument, "snapshot: no serial port state")
        }
        serial.restore(serialState)
        for (index, transport) in transports.enumerated() {
            guard snapshot.devices[Self.deviceTypeKey(index)] == Self.encodedType(transport.device.deviceType),
                  let state = snapshot.devices[Self.transportKey(index)].flatMap(VirtioMMIOTransport.State.init(encoded:)) else {
                throw HyperError(.invalidArgument, "snapshot: virtio device \(index) is missing or of another kind")
            }
            try transport.restore(state)
        }
    }

    /// The machine around `memory`: the VM, its vCPUs, COM1, the i8042 and the virtio transports.
    private init(memory: GuestMemory, vcpuCount: Int, devices: [any VirtioDevice], console: ConsoleLog, on hypervisor: any Hypervisor) throws(HyperError) {
        self.console = console
        self.memory = memory
        let windows = Self.windows(count: devices.count)
        machine = try hypervisor.makeVirtualMachine(memory: memory)
        var created: [any VirtualCPU] = []
        for index in 0..<vcpuCount { created.append(try machine.makeVCPU(index: index)) }
        vcpus = created

        let machine = self.machine
        serial = try RawMachine.mapLegacyDevices(on: bus, machine: machine) { [console] bytes in console.append(bytes) }
        var transports: [VirtioMMIOTransport] = []
        for (device, window) in zip(devices, windows) {
            let trigger = try machine.makeInterruptTrigger(line: window.interrupt)
            let transport = VirtioMMIOTransport(device: device, memory: memory, trigger: trigger)
            try bus.mapMemory(UInt64(window.base), length: VirtioMMIOTransport.windowSize, to: transport)
            transports.append(transport)
        }
        self.transports = transports
    }

    /// The virtio-mmio windows of `count` devices, one page each, and their interrupt lines.
    static func windows(count: Int) -> [ACPITables.VirtioDevice] {
        (0..<count).map { index in
            ACPITables.VirtioDevice(base: UInt32(virtioBase) + UInt32(index) * 0x1000, length: UInt32(VirtioMMIOTransport.windowSize),
                                    interrupt: virtioFirstInterrupt + UInt32(index))
        }
    }

    // The names of the device states in a snapshot.
    static let serialKey = "serial"
    static func transportKey(_ index: Int) -> String { "virtio.\(index)" }
    static func deviceTypeKey(_ index: Int) -> String { "virtio.\(index).type" }
    static func encodedType(_ type: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: type >> ($0 * 8)) } }

    /// Starts every vCPU on its own thread. The first vCPU to end the machine (reset, power-off, a fault)
    /// stops the others, and `onEnd` gets that exit, or the error, once. `stop` ends it from outside.
    public func start(onEnd: @escaping @Sendable (Result<VMExit, HyperError>) -> Void) throws(HyperError) {
        endHandler.withLock { $0 = onEnd }
        for index in vcpus.indices {
            let thread = try HostThread.start { [self] in
                let outcome: Result<VMExit, HyperError>
                do throws(HyperError) {
                    outcome = .success(try vcpus[index].run(bus: bus, deadline: nil))
                } catch {
                    outcome = .failure(error)
                }
                if case .success(.stopped) = outcome { return }
                guard ended.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged else { return }
                serial.flush()
                for other in vcpus { other.requestStop() }
                onEnd(outcome)
            }
            threads.withLock { $0.append(thread) }
        }
    }

    /// Stops every vCPU thread at its next exit and waits for them, so that the machine's state holds still
    /// (for `captureSnapshot`); `resume` starts them again. Throws when the machine has ended.
    public func pause() throws(HyperError) {
        stopThreads()
        guard !ended.load(ordering: .sequentiallyConsistent) else { throw HyperError(.phaseFailed, "the machine has ended") }
    }

    /// Starts the vCPU threads of a paused machine again, with the end handler `start` was given.
    public func resume() throws(HyperError) {
        guard let onEnd = endHandler.withLock({ $0 }) else { throw HyperError(.phaseFailed, "the machine was never started") }
        guard !ended.load(ordering: .sequentiallyConsistent) else { throw HyperError(.phaseFailed, "the machine has ended") }
        try start(onEnd: onEnd)
    }

    /// The machine's whole state while it is paused: the VM, every vCPU, COM1 and each virtio transport
    /// (with its device's type). A device that failed cannot be snapshotted.
    public func captureSnapshot() throws(HyperError) -> MachineSnapshot {
        guard threads.withLock({ $0.isEmpty }) else { throw HyperError(.phaseFailed, "a snapshot needs the machine paused") }
        var devices: [String: [UInt8]] = [Self.serialKey: serial.state.encoded]
        for (index, transport) in transports.enumerated() {
            let state = transport.state
            if let failure = state.failure { throw HyperError(.phaseFailed, "virtio device \(index) has failed (\(failure)); it cannot be snapshotted") }
            devices[Self.transportKey(index)] = state.encoded
            devices[Self.deviceTypeKey(index)] = Self.encodedType(transport.device.deviceType)
        }
        return try MachineSnapshot.capture(machine: machine, vcpus: vcpus, devices: devices)
    }

    /// Stops every vCPU and waits for their threads. Safe to call more than once.
    public func stop() {
        ended.store(true, ordering: .sequentiallyConsistent)
        stopThreads()
    }

    /// Asks every vCPU to stop and waits for their threads to end.
    private func stopThreads() {
        for vcpu in vcpus { vcpu.requestStop() }
        let running = threads.withLock { list in
            defer { list = [] }
            return list
        }
        for thread in running { thread.join() }
        serial.flush()
    }
}
