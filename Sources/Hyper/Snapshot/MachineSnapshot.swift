import HyperAgentProtocol

/// A machine saved whole: guest memory, the VM's and each vCPU's accelerator state, and the devices' state,
/// all plain values. `write(to:)` puts it in a folder: `memory` (the guest's RAM, sparse where it is zero) and
/// `state` (everything else, versioned and checksummed, with the hyperctl release and the host CPU's
/// identity). `read(from:)` refuses a snapshot that is corrupt, truncated, of another format, release or
/// CPU model, with a message that says which. docs/snapshots.md describes the format.
public struct MachineSnapshot: Equatable, Sendable {
    /// The state file's format version; another is refused.
    public static let formatVersion: UInt32 = 1
    static let magic = Array("HYPRSNAP".utf8)
    static let page = 4096

    public var release: String
    public var cpuIdentity: String
    public var memorySize: UInt64
    public var machine: AcceleratorState
    public var vcpus: [AcceleratorState]
    /// Each device's state by name (`serial`, `i8042`, ...), encoded by the device.
    public var devices: [String: [UInt8]]

    /// Creates a snapshot of the current release on this host.
    public init(memorySize: UInt64, machine: AcceleratorState, vcpus: [AcceleratorState], devices: [String: [UInt8]]) {
        release = HyperRelease.version
        cpuIdentity = HostSystem.cpuIdentity()
        self.memorySize = memorySize
        self.machine = machine
        self.vcpus = vcpus
        self.devices = devices
    }

    /// Saves a stopped machine: its VM, its vCPUs (none may be running) and `memory`.
    public static func capture(machine: any VirtualMachine, vcpus: [any VirtualCPU], devices: [String: [UInt8]]) throws(HyperError) -> MachineSnapshot {
        var states: [AcceleratorState] = []
        for vcpu in vcpus { states.append(try vcpu.saveState()) }
        return MachineSnapshot(memorySize: machine.memory.size, machine: try machine.saveState(), vcpus: states, devices: devices)
    }

    // MARK: - The folder

    /// Writes `memory` (this snapshot's guest RAM) and the state into `folder`, which must not exist yet.
    public func write(to folder: String, memory: GuestMemory) throws(HyperError) {
        guard memory.size == memorySize else { throw HyperError(.invalidArgument, "snapshot: the memory is not the machine's") }
        do {
            try HostSystem.makeNewDirectory(folder, mode: 0o700)
            let fd = try HostSystem.createFile(folder + "/memory")
            defer { HostSystem.closeDescriptor(fd) }
            try HostSystem.setFileSize(fd, memorySize)
            // Only pages with data are written: the rest stays a hole, read back as zeros.
            var offset: UInt64 = 0
            while offset < memorySize {
                let chunk = try memory.read(Self.page, at: offset)
                if chunk.contains(where: { $0 != 0 }) { try HostSystem.writeAt(fd, chunk, offset: offset) }
                offset += UInt64(Self.page)
            }
            try HostSystem.writeFile(folder + "/state", encoded)
        } catch {
            throw (error as? HyperError) ?? HyperError(.hostFailure, "snapshot: \(error)")
        }
    }

    /// Reads and checks a snapshot folder's state.
    public static func read(from folder: String) throws(HyperError) -> MachineSnapshot {
        let bytes: [UInt8]
        do {
            bytes = try HostSystem.readFile(folder + "/state", limit: 64 << 20)
        } catch {
            throw HyperError(.invalidArgument, "snapshot \(folder): cannot read its state: \(HostSystem.errorText(error.errorNumber))")
        }
        let snapshot = try decode(bytes, folder: folder)
        guard snapshot.release == HyperRelease.version else {
            throw HyperError(.invalidArgument, "snapshot \(folder) was made by hyperctl \(snapshot.release); this is \(HyperRelease.version)")
        }
        let here = HostSystem.cpuIdentity()
        guard snapshot.cpuIdentity == here else {
            throw HyperError(.invalidArgument, "snapshot \(folder) was made on another CPU model (\(snapshot.cpuIdentity)); this host has \(here)")
        }
        return snapshot
    }

    /// The snapshot's memory, mapped copy-on-write from its file (nothing is read until the guest touches it).
    public static func mapMemory(from folder: String, snapshot: MachineSnapshot) throws(HyperError) -> GuestMemory {
        try GuestMemory(mappingCopyOnWrite: folder + "/memory", size: snapshot.memorySize)
    }

    // MARK: - The state file

    /// `HYPRSNAP`, u32 format version, u64 payload length, the payload, u32 CRC-32 of everything before it.
    var encoded: [UInt8] {
        var payload = PayloadWriter()
        payload.string(release)
        payload.string(cpuIdentity)
        payload.integer(memorySize)
        payload.state(machine)
        payload.integer(UInt32(vcpus.count))
        for vcpu in vcpus { payload.state(vcpu) }
        payload.integer(UInt32(devices.count))
        for name in devices.keys.sorted() {
            payload.string(name)
            payload.data(devices[name] ?? [])
        }
        var file = PayloadWriter()
        file.bytes = Self.magic
        file.integer(Self.formatVersion)
        file.integer(UInt64(payload.bytes.count))
        file.bytes += payload.bytes
        file.integer(CRC32.checksum(file.bytes))
        return file.bytes
    }

    static func decode(_ bytes: [UInt8], folder: String) throws(HyperError) -> MachineSnapshot {
        func refuse(_ why: String) -> HyperError { HyperError(.invalidArgument, "snapshot \(folder) is refused: \(why)") }
        guard bytes.count >= 24, Array(bytes[0..<8]) == magic else { throw refuse("its state file is not a hyperctl snapshot") }
        var header = PayloadReader(bytes: bytes[8..<20])
        var trailer = PayloadReader(bytes: bytes[(bytes.count - 4)...])
        let version: UInt32, length: UInt64, checksum: UInt32
        do {
            version = try header.integer()
            length = try header.integer()
            checksum = try trailer.integer()
        } catch {
            throw refuse("its header is cut short")
        }
        guard version == formatVersion else { throw refuse("format version \(version); this hyperctl reads version \(formatVersion)") }
        guard length == UInt64(bytes.count - 24) else { throw refuse("its state file is truncated or has extra bytes") }
        guard checksum == CRC32.checksum(Array(bytes[..<(bytes.count - 4)])) else {
            throw refuse("its checksum does not match (the state file is corrupt)")
        }
        var reader = PayloadReader(bytes: bytes[20..<(bytes.count - 4)])
        do {
            let release = try reader.string()
            let cpu = try reader.string()
            let memorySize: UInt64 = try reader.integer()
            let machine = try reader.state()
            let vcpuCount: UInt32 = try reader.integer()
            guard vcpuCount >= 1, vcpuCount <= 256 else { throw refuse("it has \(vcpuCount) vCPUs") }
            var vcpus: [AcceleratorState] = []
            for _ in 0..<vcpuCount { vcpus.append(try reader.state()) }
            let deviceCount: UInt32 = try reader.integer()
            guard deviceCount <= 64 else { throw refuse("it has \(deviceCount) devices") }
            var devices: [String: [UInt8]] = [:]
            for _ in 0..<deviceCount {
                let name = try reader.string()
                devices[name] = try reader.data()
            }
            guard reader.isAtEnd else { throw refuse("its state has trailing bytes") }
            var snapshot = MachineSnapshot(memorySize: memorySize, machine: machine, vcpus: vcpus, devices: devices)
            snapshot.release = release
            snapshot.cpuIdentity = cpu
            return snapshot
        } catch let error as HyperError {
            throw error
        } catch {
            throw refuse("its state is malformed (\(error))")
        }
    }
}

extension PayloadWriter {
    /// An accelerator state: its accelerator's name, then its bytes.
    mutating func state(_ state: AcceleratorState) {
        string(state.accelerator)
        data(state.bytes)
    }
}

extension PayloadReader {
    mutating func state() throws(AgentProtocolError) -> AcceleratorState {
        AcceleratorState(accelerator: try string(), bytes: try data())
    }
}

/// CRC-32 (IEEE 802.3), to tell a damaged snapshot from a good one.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 == 1 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}

extension Serial16550.State {
    /// The state as snapshot bytes.
    public var encoded: [UInt8] {
        [interruptEnable, lineControl, modemControl, scratch, UInt8(divisor & 0xFF), UInt8(divisor >> 8), fifoControl,
         transmitInterruptPending ? 1 : 0]
    }

    /// Reads `encoded`'s bytes; nil for anything else.
    public init?(encoded bytes: [UInt8]) {
        guard bytes.count == 8, bytes[7] <= 1 else { return nil }
        self.init()
        interruptEnable = bytes[0]
        lineControl = bytes[1]
        modemControl = bytes[2]
        scratch = bytes[3]
        divisor = UInt16(bytes[4]) | UInt16(bytes[5]) << 8
        fifoControl = bytes[6]
        transmitInterruptPending = bytes[7] == 1
    }
}

extension VirtioMMIOTransport.State {
    /// The state as snapshot bytes: the registers, then each queue and whether it is live. A failed device
    /// has no snapshot form (a snapshot of it is refused before this is asked).
    public var encoded: [UInt8] {
        var writer = PayloadWriter()
        for value in [status, deviceFeatureSelect, driverFeatureSelect, queueSelect, interruptStatus, configGeneration] { writer.integer(value) }
        writer.integer(driverFeatures)
        writer.integer(UInt32(queues.count))
        for (queue, live) in zip(queues, ready) {
            writer.integer(queue.size)
            writer.integer(queue.descriptorTable)
            writer.integer(queue.availableRing)
            writer.integer(queue.usedRing)
            writer.integer(queue.nextAvailable)
            writer.integer(queue.nextUsed)
            writer.integer(UInt8(live ? 1 : 0))
        }
        return writer.bytes
    }

    /// Reads `encoded`'s bytes; nil for anything else (a queue larger than the transport allows included).
    public init?(encoded bytes: [UInt8]) {
        var reader = PayloadReader(bytes: bytes[...])
        do {
            self.init()
            status = try reader.integer()
            deviceFeatureSelect = try reader.integer()
            driverFeatureSelect = try reader.integer()
            queueSelect = try reader.integer()
            interruptStatus = try reader.integer()
            configGeneration = try reader.integer()
            driverFeatures = try reader.integer()
            let count: UInt32 = try reader.integer()
            guard count <= 16 else { return nil }
            for _ in 0..<count {
                var queue = VirtQueue()
                queue.size = try reader.integer()
                queue.descriptorTable = try reader.integer()
                queue.availableRing = try reader.integer()
                queue.usedRing = try reader.integer()
                queue.nextAvailable = try reader.integer()
                queue.nextUsed = try reader.integer()
                let live: UInt8 = try reader.integer()
                guard queue.size <= VirtQueue.maximumSize, live <= 1 else { return nil }
                queues.append(queue)
                ready.append(live == 1)
            }
        } catch {
            return nil
        }
        guard reader.isAtEnd else { return nil }
    }
}
