/// A split virtqueue (virtio 1.x) as the device side sees it, with every guest-supplied index, address,
/// length and chain validated.
///
/// A malformed ring (an out-of-range head, a descriptor outside guest memory, a loop, an indirect descriptor
/// we never offered) is reported as `VirtQueueError`; the transport then puts the device into its failed
/// state. Nothing here can read outside guest memory or loop forever. The state is a plain value.
public struct VirtQueue: Equatable, Sendable {
    /// The ring size the driver chose (a power of two up to `maximumSize`).
    public var size: UInt16 = 0
    public var descriptorTable: UInt64 = 0
    public var availableRing: UInt64 = 0
    public var usedRing: UInt64 = 0
    /// The next available-ring entry the device will take.
    public var nextAvailable: UInt16 = 0
    /// The next used-ring index the device will publish.
    public var nextUsed: UInt16 = 0

    /// The largest ring this implementation offers.
    public static let maximumSize: UInt16 = 256

    static let descriptorNext: UInt16 = 1
    static let descriptorWrite: UInt16 = 2
    static let descriptorIndirect: UInt16 = 4

    /// Creates an unconfigured queue.
    public init() {}

    /// One buffer of a chain: guest-physical address and length, already checked against guest memory.
    public struct Buffer: Equatable, Sendable {
        public var address: UInt64
        public var length: UInt32

        /// Creates a buffer description.
        public init(address: UInt64, length: UInt32) {
            self.address = address
            self.length = length
        }
    }

    /// A descriptor chain taken from the available ring.
    public struct Chain: Equatable, Sendable {
        /// The head descriptor's index, returned through the used ring.
        public var head: UInt16
        /// Buffers the device reads (driver to device), in order.
        public var readable: [Buffer] = []
        /// Buffers the device writes (device to driver), in order.
        public var writable: [Buffer] = []
    }

    /// Checks that the driver's configuration fits in guest memory with the alignment the spec requires.
    public func validateLayout(in memory: GuestMemory) throws(VirtQueueError) {
        guard size > 0, size <= Self.maximumSize, size & (size - 1) == 0 else { throw .badSize(size) }
        let count = UInt64(size)
        guard descriptorTable % 16 == 0, memory.contains(descriptorTable, count: 16 * count) else { throw .badRing("descriptor table") }
        guard availableRing % 2 == 0, memory.contains(availableRing, count: 6 + 2 * count) else { throw .badRing("available ring") }
        guard usedRing % 4 == 0, memory.contains(usedRing, count: 6 + 8 * count) else { throw .badRing("used ring") }
    }

    /// Takes the next chain the driver made available, or returns nil when there is none.
    public mutating func popChain(from memory: GuestMemory) throws(VirtQueueError) -> Chain? {
        try validateLayout(in: memory)
        let availableIndex: UInt16 = try read(memory, availableRing + 2)
        guard availableIndex != nextAvailable else { return nil }
        // The driver may be at most `size` entries ahead.
        guard availableIndex &- nextAvailable <= size else { throw .availableIndexTooFar(availableIndex) }
        let slot = UInt64(nextAvailable % size)
        let head: UInt16 = try read(memory, availableRing + 4 + 2 * slot)
        guard head < size else { throw .badHead(head) }
        var chain = Chain(head: head)
        var index = head
        var visited = 0
        while true {
            visited += 1
            guard visited <= Int(size) else { throw .chainLoop(head) }
            let entry = descriptorTable + 16 * UInt64(index)
            let address: UInt64 = try read(memory, entry)
            let length: UInt32 = try read(memory, entry + 8)
            let flags: UInt16 = try read(memory, entry + 12)
            let next: UInt16 = try read(memory, entry + 14)
            guard flags & Self.descriptorIndirect == 0 else { throw .indirectNotNegotiated(index) }
            guard memory.contains(address, count: UInt64(length)) else { throw .bufferOutsideMemory(index) }
            let buffer = Buffer(address: address, length: length)
            if flags & Self.descriptorWrite != 0 {
                chain.writable.append(buffer)
            } else {
                // The spec puts every readable descriptor before the writable ones.
                guard chain.writable.isEmpty else { throw .readableAfterWritable(index) }
                chain.readable.append(buffer)
            }
            guard flags & Self.descriptorNext != 0 else { break }
            guard next < size else { throw .badNext(next) }
            index = next
        }
        nextAvailable &+= 1
        return chain
    }

    /// Returns a finished chain to the driver with the number of bytes written into its writable buffers.
    public mutating func pushUsed(head: UInt16, written: UInt32, into memory: GuestMemory) throws(VirtQueueError) {
        try validateLayout(in: memory)
        let slot = UInt64(nextUsed % size)
        try write(memory, UInt32(head), usedRing + 4 + 8 * slot)
        try write(memory, written, usedRing + 8 + 8 * slot)
        nextUsed &+= 1
        try write(memory, nextUsed, usedRing + 2)
    }

    private func read<T: FixedWidthInteger>(_ memory: GuestMemory, _ address: UInt64) throws(VirtQueueError) -> T {
        do { return try memory.read(T.self, at: address) } catch { throw .badRing("access at 0x\(String(address, radix: 16))") }
    }

    private func write<T: FixedWidthInteger>(_ memory: GuestMemory, _ value: T, _ address: UInt64) throws(VirtQueueError) {
        do { try memory.write(value, at: address) } catch { throw .badRing("access at 0x\(String(address, radix: 16))") }
    }
}

/// Why a virtqueue is unusable; the device goes into its failed state (DEVICE_NEEDS_RESET).
public enum VirtQueueError: Error, Equatable, Sendable, CustomStringConvertible {
    case badSize(UInt16)
    case badRing(String)
    case availableIndexTooFar(UInt16)
    case badHead(UInt16)
    case badNext(UInt16)
    case chainLoop(UInt16)
    case indirectNotNegotiated(UInt16)
    case bufferOutsideMemory(UInt16)
    case readableAfterWritable(UInt16)

    public var description: String {
        switch self {
        case let .badSize(size): return "virtqueue size \(size) is not a power of two up to \(VirtQueue.maximumSize)"
        case let .badRing(what): return "virtqueue \(what) lies outside guest memory or is misaligned"
        case let .availableIndexTooFar(index): return "available index \(index) is more than a ring ahead"
        case let .badHead(head): return "chain head \(head) is outside the descriptor table"
        case let .badNext(next): return "descriptor next \(next) is outside the descriptor table"
        case let .chainLoop(head): return "descriptor chain from \(head) is longer than the ring (a loop)"
        case let .indirectNotNegotiated(index): return "descriptor \(index) is indirect, which was not negotiated"
        case let .bufferOutsideMemory(index): return "descriptor \(index) points outside guest memory"
        case let .readableAfterWritable(index): return "descriptor \(index) is readable after a writable one"
        }
    }
}
