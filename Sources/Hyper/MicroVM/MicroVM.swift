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

    /// Builds the machine; nothing runs until `start`.
    public init(_ configuration: Configuration, devices: [any VirtioDevice], console: ConsoleLog, on hypervisor: any Hypervisor) throws(HyperError) {
        guard configuration.memoryBytes >= 64 << 20, configuration.memoryBytes <= Self.maximumMemory else {
            throw HyperError(.invalidSpec, "memory: a microVM takes 64 MiB to \(Units.formatSize(Self.maximumMemory)); \(Units.formatSize(configuration.memoryBytes)) was asked")
        }
        guard (1...Self.maximumVCPUs).contains(configuration.vcpus) else {
            throw HyperError(.invalidSpec, "cpus: a microVM takes 1 to \(Self.maximumVCPUs) vCPUs; \(configuration.vcpus) was asked")
        }
        self.console = console
        memory = try GuestMemory(size: configuration.memoryBytes)
        let windows = devices.indices.map { index in
            ACPITables.VirtioDevice(base: UInt32(Self.virtioBase) + UInt32(index) * 0x1000, length: UInt32(VirtioMMIOTransport.windowSize),
                                    interrupt: Self.virtioFirstInterrupt + UInt32(index))
        }
        let entry = try GuestLoader.load(kernel: configuration.kernel, kernelName: configuration.kernelName, initrd: configuration.initrd,
                                         commandLine: configuration.commandLine, into: memory, vcpus: configuration.vcpus, virtioDevices: windows)
        machine = try hypervisor.makeVirtualMachine(memory: memory)
        var created: [any VirtualCPU] = []
        for index in 0..<configuration.vcpus { created.append(try machine.makeVCPU(index: index)) }
        vcpus = created
        try vcpus[0].setSpecialRegisters(entry.specialRegisters)
        try vcpus[0].setRegisters(entry.registers)

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

    /// Starts every vCPU on its own thread. The first vCPU to end the machine (reset, power-off, a fault)
    /// stops the others, and `onEnd` gets that exit, or the error, once. `stop` ends it from outside.
    public func start(onEnd: @escaping @Sendable (Result<VMExit, HyperError>) -> Void) throws(HyperError) {
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

    /// Stops every vCPU and waits for their threads. Safe to call more than once.
    public func stop() {
        ended.store(true, ordering: .sequentiallyConsistent)
        for vcpu in vcpus { vcpu.requestStop() }
        let running = threads.withLock { list in
            defer { list = [] }
            return list
        }
        for thread in running { thread.join() }
        serial.flush()
    }
}
