import Hyper
import Synchronization
import Testing
@testable import HyperFake

/// A virtio driver made of scripted MMIO accesses: it sets a device up the way Linux's virtio_mmio does
/// and lays out its rings in guest memory, so the device models run through the fake accelerator.
final class ScriptedVirtioDriver {
    static let base: UInt64 = 0xD000_0000
    static let line: UInt32 = 5
    let memory: GuestMemory
    let recording = ScriptedHypervisor.Recording()
    let bus = MachineBus()
    let transport: VirtioMMIOTransport
    private var nextBuffer: UInt64 = 0x40000
    private var nextDescriptor: [UInt16] = []
    private var availableIndex: [UInt16] = []

    init(device: any VirtioDevice, memorySize: UInt64 = 1 << 20) throws {
        memory = try GuestMemory(size: memorySize)
        let machine = try ScriptedHypervisor(script: [], recording: recording).makeVirtualMachine(memory: memory)
        transport = VirtioMMIOTransport(device: device, memory: memory, trigger: try machine.makeInterruptTrigger(line: Self.line))
        try bus.mapMemory(Self.base, length: VirtioMMIOTransport.windowSize, to: transport)
        nextDescriptor = Array(repeating: 0, count: device.queueSizes.count)
        availableIndex = Array(repeating: 0, count: device.queueSizes.count)
    }

    /// Runs guest accesses through a scripted vCPU; returns what the reads saw.
    @discardableResult
    func perform(_ steps: [ScriptedHypervisor.Step]) throws -> [UInt64] {
        let before = recording.reads.count
        let vcpu = try ScriptedHypervisor(script: steps, recording: recording).makeVirtualMachine(memory: memory).makeVCPU(index: 0)
        _ = try vcpu.run(bus: bus, deadline: nil)
        return Array(recording.reads[before...])
    }

    static func write(_ offset: UInt64, _ value: UInt64) -> ScriptedHypervisor.Step { .mmioWrite(address: base + offset, size: 4, value: value) }
    static func read(_ offset: UInt64) -> ScriptedHypervisor.Step { .mmioRead(address: base + offset, size: 4) }

    static func queueArea(_ queue: Int) -> (descriptors: UInt64, available: UInt64, used: UInt64) {
        let area = 0x10000 + UInt64(queue) * 0x4000
        return (area, area + 0x1000, area + 0x2000)
    }

    /// ACKNOWLEDGE, DRIVER, features (VERSION_1 unless told), FEATURES_OK, the queues, DRIVER_OK. Returns
    /// the status read back after FEATURES_OK.
    @discardableResult
    func initialize(queueSize: UInt64 = 16, driverFeatures: UInt64 = 1 << 32) throws -> UInt64 {
        var steps: [ScriptedHypervisor.Step] = [Self.write(0x70, 0), Self.write(0x70, 3)]
        steps += [Self.write(0x24, 0), Self.write(0x20, driverFeatures & 0xFFFF_FFFF), Self.write(0x24, 1), Self.write(0x20, driverFeatures >> 32)]
        steps += [Self.write(0x70, 11), Self.read(0x70)]
        for queue in nextDescriptor.indices {
            let area = Self.queueArea(queue)
            steps += [Self.write(0x30, UInt64(queue)), Self.write(0x38, queueSize),
                      Self.write(0x80, area.descriptors), Self.write(0x84, 0), Self.write(0x90, area.available), Self.write(0x94, 0),
                      Self.write(0xA0, area.used), Self.write(0xA4, 0), Self.write(0x44, 1)]
        }
        steps.append(Self.write(0x70, 15))
        return try perform(steps)[0]
    }

    /// Makes one chain available: readable buffers holding `readable`, then writable buffers of these sizes.
    /// Returns the guest addresses of the writable buffers.
    @discardableResult
    func offer(queue: Int, readable: [[UInt8]] = [], writable: [Int] = [], queueSize: UInt16 = 16) throws -> [UInt64] {
        let area = Self.queueArea(queue)
        var buffers: [(address: UInt64, length: Int, write: Bool)] = []
        for bytes in readable {
            try memory.write(bytes, at: nextBuffer)
            buffers.append((nextBuffer, bytes.count, false))
            nextBuffer += UInt64(bytes.count + 15) & ~15
        }
        var writableAddresses: [UInt64] = []
        for length in writable {
            try memory.zero(length, at: nextBuffer)
            buffers.append((nextBuffer, length, true))
            writableAddresses.append(nextBuffer)
            nextBuffer += UInt64(length + 15) & ~15
        }
        let head = nextDescriptor[queue]
        for (position, buffer) in buffers.enumerated() {
            let index = (head &+ UInt16(position)) % queueSize
            let entry = area.descriptors + 16 * UInt64(index)
            let last = position == buffers.count - 1
            try memory.write(buffer.address, at: entry)
            try memory.write(UInt32(buffer.length), at: entry + 8)
            try memory.write(UInt16((last ? 0 : 1) | (buffer.write ? 2 : 0)), at: entry + 12)
            try memory.write((index &+ 1) % queueSize, at: entry + 14)
        }
        nextDescriptor[queue] = (head &+ UInt16(buffers.count)) % queueSize
        let slot = UInt64(availableIndex[queue] % queueSize)
        try memory.write(head, at: area.available + 4 + 2 * slot)
        availableIndex[queue] &+= 1
        try memory.write(availableIndex[queue], at: area.available + 2)
        return writableAddresses
    }

    func notify(_ queue: Int) throws { try perform([Self.write(0x50, UInt64(queue))]) }

    /// The used ring's index and its entries so far (head, bytes written).
    func used(queue: Int) throws -> (index: UInt16, entries: [(head: UInt32, written: UInt32)]) {
        let area = Self.queueArea(queue)
        let index = try memory.read(UInt16.self, at: area.used + 2)
        var entries: [(UInt32, UInt32)] = []
        for slot in 0..<UInt64(min(index, 16)) {
            entries.append((try memory.read(UInt32.self, at: area.used + 4 + 8 * slot), try memory.read(UInt32.self, at: area.used + 8 + 8 * slot)))
        }
        return (index, entries.map { (head: $0.0, written: $0.1) })
    }

    var interruptCount: Int { recording.interrupts.filter { $0.line == Self.line && $0.active }.count }
}

/// Guest output a console test collects.
final class Collected: Sendable {
    private let bytes = Mutex<[UInt8]>([])
    func append(_ more: [UInt8]) { bytes.withLock { $0 += more } }
    var value: [UInt8] { bytes.withLock { $0 } }
}

/// Memory-backed disk for block tests.
final class MemoryDisk: BlockStorage {
    var bytes: [UInt8]
    var flushes = 0
    init(sectors: Int) { bytes = (0..<(sectors * 512)).map { UInt8(truncatingIfNeeded: $0 / 512) } }
    var size: UInt64 { UInt64(bytes.count) }
    func read(count: Int, at offset: UInt64) throws(HyperError) -> [UInt8] { Array(bytes[Int(offset)..<(Int(offset) + count)]) }
    func write(_ data: [UInt8], at offset: UInt64) throws(HyperError) { bytes.replaceSubrange(Int(offset)..<(Int(offset) + data.count), with: data) }
    func flush() throws(HyperError) { flushes += 1 }
}

func blockRequest(type: UInt32, sector: UInt64) -> [UInt8] {
    (0..<4).map { UInt8(truncatingIfNeeded: type >> UInt32($0 * 8)) } + [0, 0, 0, 0] + (0..<8).map { UInt8(truncatingIfNeeded: sector >> UInt64($0 * 8)) }
}

@Suite("virtio-mmio devices, driven by the scripted accelerator")
struct VirtioDeviceTests {
    @Test func transportIdentifiesItselfAsVersion2() throws {
        let driver = try ScriptedVirtioDriver(device: VirtioEntropy { Array(repeating: 7, count: $0) })
        let reads = try driver.perform([ScriptedVirtioDriver.read(0), ScriptedVirtioDriver.read(4), ScriptedVirtioDriver.read(8),
                                        ScriptedVirtioDriver.write(0x14, 1), ScriptedVirtioDriver.read(0x10),
                                        ScriptedVirtioDriver.write(0x30, 0), ScriptedVirtioDriver.read(0x34),
                                        ScriptedVirtioDriver.write(0x30, 9), ScriptedVirtioDriver.read(0x34)])
        #expect(reads == [0x7472_6976, 2, 4, 1, 64, 0])
    }

    @Test func featuresOKNeedsVersion1AndOnlyOfferedBits() throws {
        let driver = try ScriptedVirtioDriver(device: VirtioEntropy { Array(repeating: 7, count: $0) })
        #expect(try driver.initialize(driverFeatures: 0) & 8 == 0, "a legacy driver is refused")
        #expect(try driver.initialize(driverFeatures: 1 << 32 | 1 << 5) & 8 == 0, "an unoffered feature is refused")
        #expect(try driver.initialize() & 8 == 8)
    }

    @Test func consoleCarriesBytesBothWaysAndInterrupts() throws {
        let output = Collected()
        let console = VirtioConsole { output.append($0) }
        let driver = try ScriptedVirtioDriver(device: console)
        try driver.initialize()
        try driver.offer(queue: 1, readable: [Array("hello ".utf8), Array("host".utf8)])
        try driver.notify(1)
        #expect(output.value == Array("hello host".utf8))
        #expect(try driver.used(queue: 1).index == 1)

        // Host bytes wait until the guest posts receive buffers, then fill them in order.
        driver.transport.perform { rings throws(VirtQueueError) in try console.enqueue(Array("from the host".utf8), rings: rings) }
        #expect(console.pendingCount == 13)
        let buffers = try driver.offer(queue: 0, writable: [8, 8])
        try driver.notify(0)
        #expect(console.pendingCount == 0)
        let used = try driver.used(queue: 0)
        #expect(used.index == 1 && used.entries[0].written == 13)
        #expect(try driver.memory.read(8, at: buffers[0]) + driver.memory.read(5, at: buffers[1]) == Array("from the host".utf8))
        #expect(driver.interruptCount == 2)
        #expect(try driver.perform([ScriptedVirtioDriver.read(0x60)]) == [1], "used-buffer interrupt pending")
    }

    @Test func consoleOutputWaitsInTheGuestWhileTheHostIsBehind() throws {
        let output = Collected()
        let accepting = Mutex(false)
        let console = VirtioConsole { output.append($0) }
        console.acceptsOutput = { accepting.withLock { $0 } }
        let driver = try ScriptedVirtioDriver(device: console)
        try driver.initialize()
        try driver.offer(queue: 1, readable: [Array("later".utf8)])
        try driver.notify(1)
        let usedBefore = try driver.used(queue: 1).index
        #expect(output.value.isEmpty && usedBefore == 0, "the chain stays with the guest")
        accepting.withLock { $0 = true }
        driver.transport.perform { rings throws(VirtQueueError) in try console.resumeOutput(rings: rings) }
        #expect(output.value == Array("later".utf8))
        #expect(try driver.used(queue: 1).index == 1)
    }

    @Test func entropyFillsWritableBuffers() throws {
        let driver = try ScriptedVirtioDriver(device: VirtioEntropy { Array(repeating: 0xA5, count: $0) })
        try driver.initialize()
        let buffers = try driver.offer(queue: 0, writable: [32])
        try driver.notify(0)
        #expect(try driver.used(queue: 0).entries.first?.written == 32)
        #expect(try driver.memory.read(32, at: buffers[0]) == Array(repeating: 0xA5, count: 32))
    }

    @Test func blockReadsWritesFlushesAndIdentifies() throws {
        let disk = MemoryDisk(sectors: 8)
        let driver = try ScriptedVirtioDriver(device: VirtioBlock(storage: disk, readOnly: false, identifier: "disk-1"))
        #expect(try driver.perform([ScriptedVirtioDriver.read(0x100), ScriptedVirtioDriver.read(0x104)]) == [8, 0], "capacity in sectors")
        try driver.initialize()

        var buffers = try driver.offer(queue: 0, readable: [blockRequest(type: 0, sector: 3)], writable: [512, 1])
        try driver.notify(0)
        #expect(try driver.memory.read(512, at: buffers[0]) == Array(repeating: 3, count: 512))
        #expect(try driver.memory.read(1, at: buffers[1]) == [0])

        buffers = try driver.offer(queue: 0, readable: [blockRequest(type: 1, sector: 7), Array(repeating: 0xEE, count: 512)], writable: [1])
        try driver.notify(0)
        #expect(try driver.memory.read(1, at: buffers[0]) == [0])
        #expect(Array(disk.bytes[(7 * 512)...]) == Array(repeating: 0xEE, count: 512))

        buffers = try driver.offer(queue: 0, readable: [blockRequest(type: 4, sector: 0)], writable: [1])
        try driver.notify(0)
        #expect(disk.flushes == 1)

        buffers = try driver.offer(queue: 0, readable: [blockRequest(type: 8, sector: 0)], writable: [20, 1])
        try driver.notify(0)
        #expect(try driver.memory.read(6, at: buffers[0]) == Array("disk-1".utf8))
        #expect(try driver.used(queue: 0).index == 4)
    }

    @Test func blockRefusesRequestsPastTheEndAndWritesToReadOnlyDisks() throws {
        let disk = MemoryDisk(sectors: 4)
        let before = disk.bytes
        let driver = try ScriptedVirtioDriver(device: VirtioBlock(storage: disk, readOnly: true))
        try driver.initialize(driverFeatures: 1 << 32 | 1 << 5)
        let pastEnd = try driver.offer(queue: 0, readable: [blockRequest(type: 0, sector: 3)], writable: [1024, 1])
        let wrapping = try driver.offer(queue: 0, readable: [blockRequest(type: 0, sector: UInt64.max / 256)], writable: [512, 1])
        let readOnly = try driver.offer(queue: 0, readable: [blockRequest(type: 1, sector: 0), Array(repeating: 1, count: 512)], writable: [1])
        let unknown = try driver.offer(queue: 0, readable: [blockRequest(type: 77, sector: 0)], writable: [1])
        try driver.notify(0)
        #expect(try driver.memory.read(1, at: pastEnd[1]) == [1])
        #expect(try driver.memory.read(1, at: wrapping[1]) == [1])
        #expect(try driver.memory.read(1, at: readOnly[0]) == [1])
        #expect(try driver.memory.read(1, at: unknown[0]) == [2])
        #expect(disk.bytes == before)
    }

    @Test func transportStateIsAPlainValueThatRestores() throws {
        let output = Collected()
        let driver = try ScriptedVirtioDriver(device: VirtioConsole { output.append($0) })
        try driver.initialize()
        try driver.offer(queue: 1, readable: [Array("one".utf8)])
        try driver.notify(1)
        let saved = driver.transport.state
        #expect(saved.status == 15 && saved.queues[1].nextAvailable == 1 && saved.ready == [true, true])

        // A new transport over the same memory, given the saved state, carries on where the first stopped.
        let again = Collected()
        let restored = VirtioMMIOTransport(device: VirtioConsole { again.append($0) }, memory: driver.memory, trigger: nil)
        try restored.restore(saved)
        #expect(restored.state == saved)
        try driver.offer(queue: 1, readable: [Array("two".utf8)])
        restored.write(offset: 0x50, size: 4, value: 1)
        #expect(again.value == Array("two".utf8))
        #expect(throws: HyperError.self) { try restored.restore(VirtioMMIOTransport.State()) }
    }

    @Test func malformedRingFailsTheDeviceUntilReset() throws {
        let output = Collected()
        let driver = try ScriptedVirtioDriver(device: VirtioConsole { output.append($0) })
        try driver.initialize()
        // A descriptor that points past the end of guest memory.
        let area = ScriptedVirtioDriver.queueArea(1)
        try driver.memory.write(UInt64(driver.memory.size - 4), at: area.descriptors)
        try driver.memory.write(UInt32(64), at: area.descriptors + 8)
        try driver.memory.write(UInt16(0), at: area.available + 4)
        try driver.memory.write(UInt16(1), at: area.available + 2)
        try driver.notify(1)
        let reads = try driver.perform([ScriptedVirtioDriver.read(0x70), ScriptedVirtioDriver.read(0x60)])
        #expect(reads[0] & 64 == 64, "DEVICE_NEEDS_RESET")
        #expect(reads[1] & 2 == 2, "configuration-change interrupt")
        #expect(driver.transport.failure == .bufferOutsideMemory(0))
        #expect(output.value.isEmpty)
        try driver.initialize()
        #expect(driver.transport.failure == nil)
        #expect(try driver.perform([ScriptedVirtioDriver.read(0x70)]) == [15])
    }
}

/// Random and adversarial rings for every device: garbage descriptors, lengths, flags, indices and
/// registers, for a bounded number of rounds. Nothing may crash, hang or touch memory out of bounds.
@Suite("virtio fuzzing through the scripted accelerator", .timeLimit(.minutes(2)))
struct VirtioFuzzTests {
    static func devices() -> [(String, () -> any VirtioDevice)] {
        [
            ("console", { VirtioConsole { _ in } }),
            ("block", { VirtioBlock(storage: MemoryDisk(sectors: 16), readOnly: false) }),
            ("entropy", { VirtioEntropy { Array(repeating: 1, count: $0) } }),
        ]
    }

    @Test(arguments: 0..<3)
    func randomRingsNeverCrashOrHang(device index: Int) throws {
        var generator = SeededGenerator(seed: 0xF00D + UInt64(index))
        let (name, make) = Self.devices()[index]
        var served = 0, failed = 0
        for round in 0..<400 {
            let device = make()
            let driver = try ScriptedVirtioDriver(device: device, memorySize: 512 << 10)
            try driver.initialize()
            // Some well-formed chains with random shapes (block headers with random types and sectors)...
            for _ in 0..<Int.random(in: 0...3, using: &generator) {
                let queue = Int.random(in: 0..<device.queueSizes.count, using: &generator)
                let header = blockRequest(type: UInt32.random(in: 0...9, using: &generator), sector: UInt64.random(in: 0...20, using: &generator))
                try driver.offer(queue: queue, readable: Bool.random(using: &generator) ? [header, Array(repeating: 9, count: 512 * Int.random(in: 0...2, using: &generator))] : [],
                                 writable: (0..<Int.random(in: 0...3, using: &generator)).map { _ in [1, 7, 512, 1024].randomElement(using: &generator)! })
            }
            // ...then scribbles over the rings, unless this round stays clean.
            for _ in 0..<(round % 4 == 0 ? 0 : 24) {
                let queue = Int.random(in: 0..<device.queueSizes.count, using: &generator)
                let area = ScriptedVirtioDriver.queueArea(queue)
                let target = [area.descriptors, area.available, area.used].randomElement(using: &generator)! + UInt64.random(in: 0..<512, using: &generator)
                let value = [UInt64.random(in: 0...UInt64.max, using: &generator), UInt64.random(in: 0..<32, using: &generator),
                             UInt64(driver.memory.size) - UInt64.random(in: 0..<64, using: &generator)].randomElement(using: &generator)!
                try driver.memory.write(value, at: target)
            }
            if device is VirtioConsole {
                driver.transport.perform { rings throws(VirtQueueError) in
                    try (device as? VirtioConsole)?.enqueue((0..<300).map { UInt8(truncatingIfNeeded: $0) }, rings: rings)
                }
            }
            var steps: [ScriptedHypervisor.Step] = []
            for _ in 0..<16 {
                let offset = [0x50, 0x50, 0x50, 0x50, 0x30, 0x38, 0x44, 0x64, 0x70, 0x80, 0x100, UInt64.random(in: 0..<0x200, using: &generator)].randomElement(using: &generator)!
                steps.append(.mmioWrite(address: ScriptedVirtioDriver.base + offset, size: [4, 4, 4, 1, 2, 8].randomElement(using: &generator)!,
                                        value: UInt64.random(in: 0..<3, using: &generator)))
                steps.append(.mmioRead(address: ScriptedVirtioDriver.base + UInt64.random(in: 0..<0x210, using: &generator), size: 4))
            }
            try driver.perform(steps)
            if driver.transport.failure != nil { failed += 1 }
            if try (0..<device.queueSizes.count).contains(where: { try driver.used(queue: $0).index > 0 }) { served += 1 }
        }
        // The fuzzing reached both the devices' request handling and their failure path.
        #expect(served > 20, "\(name): \(served) rounds served a chain")
        #expect(failed > 20, "\(name): \(failed) rounds failed the device")
    }
}

@Suite("Virtio transport state for snapshots")
struct VirtioTransportStateTests {
    @Test func aTransportStateWithLiveQueuesSurvivesItsEncoding() {
        var state = VirtioMMIOTransport.State()
        state.status = 0x0F
        state.driverFeatures = 1 << 32 | 1 << 9
        state.queueSelect = 1
        state.interruptStatus = 1
        state.configGeneration = 3
        for index in 0..<2 {
            var queue = VirtQueue()
            queue.size = 256
            queue.descriptorTable = 0x10_0000 + UInt64(index) * 0x1_0000
            queue.availableRing = queue.descriptorTable + 0x1000
            queue.usedRing = queue.descriptorTable + 0x2000
            queue.nextAvailable = 65_530
            queue.nextUsed = UInt16(7 + index)
            state.queues.append(queue)
            state.ready.append(index == 0)
        }
        let bytes = state.encoded
        #expect(VirtioMMIOTransport.State(encoded: bytes) == state)
        // Cut short, lengthened, or with a queue over the largest size: refused, never trusted.
        #expect(VirtioMMIOTransport.State(encoded: Array(bytes.dropLast())) == nil)
        #expect(VirtioMMIOTransport.State(encoded: bytes + [0]) == nil)
        var oversized = state
        oversized.queues[1].size = VirtQueue.maximumSize + 1
        #expect(VirtioMMIOTransport.State(encoded: oversized.encoded) == nil)
    }
}
