import Synchronization

/// A virtio device model behind a transport: its identity, features, configuration space and queues.
///
/// Every call comes with the transport's lock held, from the vCPU thread (a register access or a queue
/// notification) or from a host thread (`VirtioMMIOTransport.perform`). A model never blocks.
public protocol VirtioDevice: AnyObject {
    /// The virtio device type (3 console, 2 block, 4 entropy).
    var deviceType: UInt32 { get }
    /// Device-specific feature bits offered (the transport adds VIRTIO_F_VERSION_1).
    var deviceFeatures: UInt64 { get }
    /// The largest size of each queue.
    var queueSizes: [UInt16] { get }
    /// Reads the device-specific configuration space.
    func readConfiguration(offset: UInt64, size: Int) -> UInt64
    /// Takes a driver write to the configuration space.
    func writeConfiguration(offset: UInt64, size: Int, value: UInt64)
    /// Handles what the driver made available on queue `index`.
    func process(queue index: Int, rings: VirtioRings) throws(VirtQueueError)
    /// Drops in-flight state when the driver resets the device.
    func reset()
}

extension VirtioDevice {
    public func writeConfiguration(offset: UInt64, size: Int, value: UInt64) {}
    public func reset() {}
}

/// A device's queues and the guest memory they live in, as a model sees them during one call.
public final class VirtioRings {
    public let memory: GuestMemory
    /// Each queue's configuration and position (plain values: a snapshot saves them).
    var queues: [VirtQueue]
    /// Whether the driver set each queue ready.
    var ready: [Bool]
    /// Set when a chain went back to the driver, so the transport interrupts once after the call.
    var usedSomething = false

    init(memory: GuestMemory, count: Int) {
        self.memory = memory
        queues = Array(repeating: VirtQueue(), count: count)
        ready = Array(repeating: false, count: count)
    }

    /// Takes the next chain of queue `index`, or nil when there is none or the queue is not live.
    public func pop(_ index: Int) throws(VirtQueueError) -> VirtQueue.Chain? {
        guard index < queues.count, ready[index] else { return nil }
        return try queues[index].popChain(from: memory)
    }

    /// Returns a chain to the driver.
    public func push(_ index: Int, head: UInt16, written: UInt32) throws(VirtQueueError) {
        try queues[index].pushUsed(head: head, written: written, into: memory)
        usedSomething = true
    }

    /// Reads the bytes of a chain's readable buffers, at most `limit`.
    public func gather(_ buffers: [VirtQueue.Buffer], limit: Int) throws(VirtQueueError) -> [UInt8] {
        var bytes: [UInt8] = []
        for buffer in buffers where bytes.count < limit {
            let count = min(Int(buffer.length), limit - bytes.count)
            do { bytes += try memory.read(count, at: buffer.address) } catch { throw .badRing("buffer at 0x\(String(buffer.address, radix: 16))") }
        }
        return bytes
    }

    /// Writes `bytes` across a chain's writable buffers, in order; returns how many fit.
    @discardableResult
    public func scatter(_ bytes: ArraySlice<UInt8>, into buffers: [VirtQueue.Buffer]) throws(VirtQueueError) -> Int {
        var offset = bytes.startIndex
        for buffer in buffers where offset < bytes.endIndex {
            let count = min(Int(buffer.length), bytes.endIndex - offset)
            do { try memory.write(Array(bytes[offset..<(offset + count)]), at: buffer.address) } catch { throw .badRing("buffer at 0x\(String(buffer.address, radix: 16))") }
            offset += count
        }
        return offset - bytes.startIndex
    }
}

/// The virtio-mmio transport (version 2, "modern") for one device: the register window the guest drives,
/// feature negotiation, queue setup and interrupts.
///
/// A malformed ring does not reach the host: the error puts the device into DEVICE_NEEDS_RESET (with a
/// configuration-change interrupt) and it ignores its queues until the driver resets it.
public final class VirtioMMIOTransport: BusDevice, @unchecked Sendable {
    /// The size of the register window.
    public static let windowSize: UInt64 = 0x200

    static let magic: UInt32 = 0x7472_6976  // "virt"
    static let vendor: UInt32 = 0x5259_5048  // "HPYR"
    static let featureVersion1: UInt64 = 1 << 32
    static let statusFeaturesOK: UInt32 = 8
    static let statusNeedsReset: UInt32 = 64

    /// The transport's registers and queues as a plain value, for snapshots.
    public struct State: Equatable, Sendable {
        public var status: UInt32 = 0
        public var deviceFeatureSelect: UInt32 = 0
        public var driverFeatureSelect: UInt32 = 0
        public var driverFeatures: UInt64 = 0
        public var queueSelect: UInt32 = 0
        public var interruptStatus: UInt32 = 0
        public var configGeneration: UInt32 = 0
        /// Each queue and whether it is live (filled in by `state`; held by the rings while running).
        public var queues: [VirtQueue] = []
        public var ready: [Bool] = []
        /// Why the device failed, once it has.
        public var failure: VirtQueueError?

        /// The reset state (no queues).
        public init() {}
    }

    public let device: any VirtioDevice
    private let lock = Mutex(())
    private let rings: VirtioRings
    private let trigger: (any InterruptTrigger)?
    private var registers = State()

    /// Why the device failed, once it has.
    public var failure: VirtQueueError? { lock.withLock { _ in registers.failure } }

    /// The transport's state (registers and queues), taken under its lock.
    public var state: State {
        lock.withLock { _ in
            var copy = registers
            copy.queues = rings.queues
            copy.ready = rings.ready
            return copy
        }
    }

    /// Puts back a state taken from a transport of the same device type (a snapshot restore).
    public func restore(_ state: State) throws(HyperError) {
        guard state.queues.count == rings.queues.count, state.ready.count == rings.ready.count else {
            throw HyperError(.invalidArgument, "virtio state has \(state.queues.count) queues; this device has \(rings.queues.count)")
        }
        lock.withLock { _ in
            // The queues live in `rings` only; the state carries them for snapshots.
            registers = state
            registers.queues = []
            registers.ready = []
            rings.queues = state.queues
            rings.ready = state.ready
        }
    }

    /// Creates the transport for `device` over `memory`, interrupting through `trigger`.
    public init(device: any VirtioDevice, memory: GuestMemory, trigger: (any InterruptTrigger)?) {
        self.device = device
        self.trigger = trigger
        rings = VirtioRings(memory: memory, count: device.queueSizes.count)
    }

    /// The device's full feature set.
    var offeredFeatures: UInt64 { device.deviceFeatures | Self.featureVersion1 }

    /// Whether the driver finished setup (DRIVER_OK) and the device has not failed.
    public var isLive: Bool { lock.withLock { _ in registers.status & 4 != 0 && registers.failure == nil } }

    /// Runs `body` on the device's rings under the lock, from a host thread, then interrupts if it used
    /// a chain. A ring error fails the device.
    public func perform(_ body: (VirtioRings) throws(VirtQueueError) -> Void) {
        let interrupt: Bool = lock.withLock { _ in
            guard registers.failure == nil, registers.status & 4 != 0 else { return false }
            return run(body)
        }
        if interrupt { trigger?.fire() }
    }

    /// Runs `body` with the lock held; returns whether to interrupt.
    private func run(_ body: (VirtioRings) throws(VirtQueueError) -> Void) -> Bool {
        rings.usedSomething = false
        do {
            try body(rings)
        } catch {
            registers.failure = error
            registers.status |= Self.statusNeedsReset
            registers.interruptStatus |= 2
            return true
        }
        if rings.usedSomething { registers.interruptStatus |= 1 }
        return rings.usedSomething
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        lock.withLock { _ in
            if offset >= 0x100 { return device.readConfiguration(offset: offset - 0x100, size: size) }
            guard size == 4 else { return 0 }
            let index = Int(registers.queueSelect)
            let valid = index < rings.queues.count
            switch offset {
            case 0x000: return UInt64(Self.magic)
            case 0x004: return 2
            case 0x008: return UInt64(device.deviceType)
            case 0x00C: return UInt64(Self.vendor)
            case 0x010: return registers.deviceFeatureSelect < 2 ? (offeredFeatures >> UInt64(32 * registers.deviceFeatureSelect)) & 0xFFFF_FFFF : 0
            case 0x034: return valid ? UInt64(device.queueSizes[index]) : 0
            case 0x044: return valid && rings.ready[index] ? 1 : 0
            case 0x060: return UInt64(registers.interruptStatus)
            case 0x070: return UInt64(registers.status)
            case 0x0FC: return UInt64(registers.configGeneration)
            default: return 0
            }
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        let interrupt: Bool = lock.withLock { _ in
            if offset >= 0x100 {
                device.writeConfiguration(offset: offset - 0x100, size: size, value: value)
                return false
            }
            guard size == 4 else { return false }
            let word = UInt32(truncatingIfNeeded: value)
            let index = Int(registers.queueSelect)
            let valid = index < rings.queues.count && !(index < rings.ready.count && rings.ready[index])
            switch offset {
            case 0x014: registers.deviceFeatureSelect = word
            case 0x020:
                if registers.driverFeatureSelect < 2 {
                    let shift = UInt64(32 * registers.driverFeatureSelect)
                    registers.driverFeatures = (registers.driverFeatures & ~(0xFFFF_FFFF << shift)) | (UInt64(word) << shift)
                }
            case 0x024: registers.driverFeatureSelect = word
            case 0x030: registers.queueSelect = word
            case 0x038:
                if valid { rings.queues[index].size = UInt16(truncatingIfNeeded: min(word, UInt32(device.queueSizes[index]))) }
            case 0x044:
                guard index < rings.queues.count else { break }
                if word == 1 {
                    // A queue whose rings do not fit in guest memory never goes live.
                    if (try? rings.queues[index].validateLayout(in: rings.memory)) != nil { rings.ready[index] = true } else {
                        registers.failure = .badRing("layout of queue \(index)")
                        registers.status |= Self.statusNeedsReset
                    }
                } else {
                    rings.ready[index] = false
                }
            case 0x050:
                guard registers.failure == nil, registers.status & 4 != 0, word < UInt32(rings.queues.count) else { return false }
                return run { rings throws(VirtQueueError) in try device.process(queue: Int(word), rings: rings) }
            case 0x064: registers.interruptStatus &= ~word
            case 0x070: setStatus(word)
            case 0x080: if valid { setLow(&rings.queues[index].descriptorTable, word) }
            case 0x084: if valid { setHigh(&rings.queues[index].descriptorTable, word) }
            case 0x090: if valid { setLow(&rings.queues[index].availableRing, word) }
            case 0x094: if valid { setHigh(&rings.queues[index].availableRing, word) }
            case 0x0A0: if valid { setLow(&rings.queues[index].usedRing, word) }
            case 0x0A4: if valid { setHigh(&rings.queues[index].usedRing, word) }
            default: break
            }
            return false
        }
        if interrupt { trigger?.fire() }
    }

    private func setLow(_ field: inout UInt64, _ word: UInt32) { field = (field & 0xFFFF_FFFF_0000_0000) | UInt64(word) }
    private func setHigh(_ field: inout UInt64, _ word: UInt32) { field = (field & 0xFFFF_FFFF) | UInt64(word) << 32 }

    private func setStatus(_ word: UInt32) {
        if word == 0 {
            // Reset: everything back to its initial state.
            registers.status = 0
            registers.driverFeatures = 0
            registers.interruptStatus = 0
            registers.failure = nil
            for index in rings.queues.indices {
                rings.queues[index] = VirtQueue()
                rings.ready[index] = false
            }
            device.reset()
            return
        }
        var next = word
        if word & Self.statusFeaturesOK != 0 && registers.status & Self.statusFeaturesOK == 0 {
            // FEATURES_OK sticks only for a subset of what was offered that includes VERSION_1.
            let acceptable = registers.driverFeatures & ~offeredFeatures == 0 && registers.driverFeatures & Self.featureVersion1 != 0
            if !acceptable { next &= ~Self.statusFeaturesOK }
        }
        registers.status = next | (registers.status & Self.statusNeedsReset)
    }
}
