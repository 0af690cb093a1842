import Hyper
import Testing
@testable import HyperFake

/// A queue of 8 entries laid out at fixed addresses in 64 KiB of guest memory.
func makeQueue() throws -> (VirtQueue, GuestMemory) {
    let memory = try GuestMemory(size: 64 << 10)
    var queue = VirtQueue()
    queue.size = 8
    queue.descriptorTable = 0x1000
    queue.availableRing = 0x2000
    queue.usedRing = 0x3000
    return (queue, memory)
}

/// Writes descriptor `index`.
func setDescriptor(_ memory: GuestMemory, _ index: UInt64, address: UInt64, length: UInt32, flags: UInt16, next: UInt16) throws {
    let entry = 0x1000 + 16 * index
    try memory.write(address, at: entry)
    try memory.write(length, at: entry + 8)
    try memory.write(flags, at: entry + 12)
    try memory.write(next, at: entry + 14)
}

/// Makes `heads` available, in order.
func makeAvailable(_ memory: GuestMemory, _ heads: [UInt16]) throws {
    for (slot, head) in heads.enumerated() { try memory.write(head, at: 0x2004 + 2 * UInt64(slot)) }
    try memory.write(UInt16(heads.count), at: 0x2002)
}

@Suite("Split virtqueue")
struct VirtQueueTests {
    @Test func wellFormedChainRoundTrips() throws {
        var (queue, memory) = try makeQueue()
        try setDescriptor(memory, 0, address: 0x8000, length: 16, flags: 1, next: 3)
        try setDescriptor(memory, 3, address: 0x9000, length: 512, flags: 2, next: 0)
        try makeAvailable(memory, [0])
        let chain = try #require(try queue.popChain(from: memory))
        #expect(chain.head == 0)
        #expect(chain.readable == [VirtQueue.Buffer(address: 0x8000, length: 16)])
        #expect(chain.writable == [VirtQueue.Buffer(address: 0x9000, length: 512)])
        #expect(try queue.popChain(from: memory) == nil, "nothing more is available")
        try queue.pushUsed(head: chain.head, written: 100, into: memory)
        #expect(try memory.read(UInt16.self, at: 0x3002) == 1)
        #expect(try memory.read(UInt32.self, at: 0x3004) == 0 && memory.read(UInt32.self, at: 0x3008) == 100)
    }

    @Test func hostileRingsAreRefused() throws {
        func attempt(_ setup: (GuestMemory, inout VirtQueue) throws -> Void) throws -> VirtQueueError? {
            var (queue, memory) = try makeQueue()
            try setup(memory, &queue)
            do {
                _ = try queue.popChain(from: memory)
                return nil
            } catch {
                return error
            }
        }
        #expect(try attempt { memory, _ in try makeAvailable(memory, [9]) } == .badHead(9))
        #expect(try attempt { memory, _ in
            try setDescriptor(memory, 0, address: 0x8000, length: 4, flags: 1, next: 200)
            try makeAvailable(memory, [0])
        } == .badNext(200))
        #expect(try attempt { memory, _ in
            try setDescriptor(memory, 0, address: 0x8000, length: 4, flags: 1, next: 1)
            try setDescriptor(memory, 1, address: 0x8000, length: 4, flags: 1, next: 0)
            try makeAvailable(memory, [0])
        } == .chainLoop(0))
        #expect(try attempt { memory, _ in
            try setDescriptor(memory, 0, address: 0xFFFF_FFFF_FFFF_FF00, length: 0x200, flags: 0, next: 0)
            try makeAvailable(memory, [0])
        } == .bufferOutsideMemory(0))
        #expect(try attempt { memory, _ in
            try setDescriptor(memory, 0, address: 0x8000, length: 16, flags: 4, next: 0)
            try makeAvailable(memory, [0])
        } == .indirectNotNegotiated(0))
        #expect(try attempt { memory, _ in
            try setDescriptor(memory, 0, address: 0x8000, length: 16, flags: 3, next: 1)
            try setDescriptor(memory, 1, address: 0x9000, length: 16, flags: 0, next: 0)
            try makeAvailable(memory, [0])
        } == .readableAfterWritable(1))
        #expect(try attempt { memory, _ in try memory.write(UInt16(100), at: 0x2002) } == .availableIndexTooFar(100))
        #expect(try attempt { _, queue in queue.size = 6 } == .badSize(6))
        #expect(try attempt { _, queue in queue.usedRing = 0xFFF0 } == .badRing("used ring"))
    }

    /// Random and adversarial rings, bounded: every pop either returns a chain inside guest memory or fails
    /// with a reason; nothing crashes or loops.
    @Test(arguments: [UInt64(1), 2, 3, 4])
    func fuzzedRingsNeverCrashOrHang(seed: UInt64) throws {
        var generator = SeededGenerator(seed: seed)
        var outcomes = (chains: 0, refusals: 0)
        for _ in 0..<500 {
            var (queue, memory) = try makeQueue()
            queue.nextAvailable = UInt16.random(in: 0...UInt16.max, using: &generator)
            // Random descriptors, biased towards plausible values so chains get followed.
            for index in 0..<UInt64(8) {
                let plausible = Bool.random(using: &generator)
                let address = plausible ? UInt64.random(in: 0..<(64 << 10), using: &generator) : UInt64.random(in: 0...UInt64.max, using: &generator)
                try setDescriptor(memory, index, address: address, length: UInt32.random(in: 0...(plausible ? 8192 : UInt32.max), using: &generator),
                                  flags: UInt16.random(in: 0...7, using: &generator), next: UInt16.random(in: 0...(plausible ? 9 : UInt16.max), using: &generator))
            }
            for slot in 0..<UInt64(8) { try memory.write(UInt16.random(in: 0...9, using: &generator), at: 0x2004 + 2 * slot) }
            try memory.write(queue.nextAvailable &+ UInt16.random(in: 0...12, using: &generator), at: 0x2002)
            for _ in 0..<16 {
                do {
                    guard let chain = try queue.popChain(from: memory) else { break }
                    for buffer in chain.readable + chain.writable {
                        #expect(memory.contains(buffer.address, count: UInt64(buffer.length)))
                    }
                    #expect(chain.readable.count + chain.writable.count <= 8)
                    outcomes.chains += 1
                    try queue.pushUsed(head: chain.head, written: 0, into: memory)
                } catch {
                    outcomes.refusals += 1
                    break  // The transport would now fail the device.
                }
            }
        }
        #expect(outcomes.chains > 0 && outcomes.refusals > 0, "the fuzzer exercised both paths: \(outcomes)")
    }
}
