/// Where a virtio-blk device keeps its sectors: a disk image file, or memory in tests.
public protocol BlockStorage: AnyObject {
    /// The size in bytes (a whole number of 512-byte sectors is used).
    var size: UInt64 { get }
    func read(count: Int, at offset: UInt64) throws(HyperError) -> [UInt8]
    func write(_ bytes: [UInt8], at offset: UInt64) throws(HyperError)
    func flush() throws(HyperError)
}

/// A disk image file.
public final class FileBlockStorage: BlockStorage {
    public let size: UInt64
    /// The open image (closed with the storage).
    let descriptor: Int32

    /// Opens `path`, read-only unless `writable`.
    public init(path: String, writable: Bool) throws(HyperError) {
        do {
            (descriptor, size) = try HostSystem.openFile(path, writable: writable)
        } catch {
            throw HyperError(.invalidArgument, "disk: \(error)")
        }
    }

    /// Takes over an open descriptor (closed with the storage) of `size` bytes.
    public init(descriptor: Int32, size: UInt64) {
        self.descriptor = descriptor
        self.size = size
    }

    deinit { HostSystem.closeDescriptor(descriptor) }

    public func read(count: Int, at offset: UInt64) throws(HyperError) -> [UInt8] {
        do { return try HostSystem.readAt(descriptor, count: count, offset: offset) } catch { throw HyperError(.hostFailure, "disk: \(error)") }
    }

    public func write(_ bytes: [UInt8], at offset: UInt64) throws(HyperError) {
        do { try HostSystem.writeAt(descriptor, bytes, offset: offset) } catch { throw HyperError(.hostFailure, "disk: \(error)") }
    }

    public func flush() throws(HyperError) {
        guard HostSystem.synchronize(descriptor) else { throw HyperError(.hostFailure, "disk: flush failed") }
    }
}

/// virtio-blk over a `BlockStorage`: reads, writes, flushes and the device id, each request checked
/// against the disk's size before it touches the storage.
public final class VirtioBlock: VirtioDevice {
    public let deviceType: UInt32 = 2
    public let queueSizes: [UInt16] = [256]
    public let readOnly: Bool
    private let storage: any BlockStorage
    private let identifier: [UInt8]

    static let featureReadOnly: UInt64 = 1 << 5
    static let featureFlush: UInt64 = 1 << 9
    static let sectorSize: UInt64 = 512
    /// The most data one request may move.
    static let maximumRequest = 4 << 20

    enum RequestType: UInt32 {
        case read = 0, write = 1, flush = 4, identify = 8
    }

    enum Status: UInt8 {
        case ok = 0, ioError = 1, unsupported = 2
    }

    /// Creates a disk over `storage`; `identifier` is what the guest reads as its serial (up to 20 bytes).
    public init(storage: any BlockStorage, readOnly: Bool, identifier: String = "hyperctl") {
        self.storage = storage
        self.readOnly = readOnly
        self.identifier = Array(identifier.utf8.prefix(20))
    }

    public var deviceFeatures: UInt64 { Self.featureFlush | (readOnly ? Self.featureReadOnly : 0) }

    /// The capacity in sectors.
    var sectors: UInt64 { storage.size / Self.sectorSize }

    public func readConfiguration(offset: UInt64, size: Int) -> UInt64 {
        // Only `capacity` (offset 0, eight bytes) is defined without further features.
        guard offset < 8, offset + UInt64(size) <= 8 else { return 0 }
        return (sectors >> (offset * 8)) & (size >= 8 ? .max : (UInt64(1) << UInt64(size * 8)) - 1)
    }

    public func process(queue index: Int, rings: VirtioRings) throws(VirtQueueError) {
        while let chain = try rings.pop(0) {
            let written = try handle(chain, rings: rings)
            try rings.push(0, head: chain.head, written: written)
        }
    }

    /// Serves one request; returns the bytes written into the chain (data and status).
    private func handle(_ chain: VirtQueue.Chain, rings: VirtioRings) throws(VirtQueueError) -> UInt32 {
        // The last writable byte is the status; without one the request is malformed.
        var dataIn = chain.writable
        guard let last = dataIn.popLast(), last.length >= 1 else {
            throw .badRing("block request \(chain.head) without a status byte")
        }
        if last.length > 1 { dataIn.append(VirtQueue.Buffer(address: last.address, length: last.length - 1)) }
        let statusAddress = last.address + UInt64(last.length - 1)
        let header = try rings.gather(chain.readable, limit: Self.maximumRequest + 16)
        func finish(_ status: Status, dataWritten: Int = 0) throws(VirtQueueError) -> UInt32 {
            do { try rings.memory.write([status.rawValue], at: statusAddress) } catch { throw .badRing("block status byte") }
            return UInt32(dataWritten + 1)
        }
        guard header.count >= 16 else { return try finish(.ioError) }
        let typeCode = header[0..<4].enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << UInt32($1.offset * 8) }
        let sector = header[8..<16].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << UInt64($1.offset * 8) }
        guard let type = RequestType(rawValue: typeCode) else { return try finish(.unsupported) }
        let capacity = storage.size
        switch type {
        case .read:
            let length = dataIn.reduce(0) { $0 + Int($1.length) }
            guard let offset = range(sector: sector, length: length, capacity: capacity) else { return try finish(.ioError) }
            guard let bytes = try? storage.read(count: length, at: offset), bytes.count == length else { return try finish(.ioError) }
            let count = try rings.scatter(bytes[...], into: dataIn)
            return try finish(.ok, dataWritten: count)
        case .write:
            guard !readOnly else { return try finish(.ioError) }
            let data = Array(header[16...])
            guard let offset = range(sector: sector, length: data.count, capacity: capacity) else { return try finish(.ioError) }
            guard (try? storage.write(data, at: offset)) != nil else { return try finish(.ioError) }
            return try finish(.ok)
        case .flush:
            guard (try? storage.flush()) != nil else { return try finish(.ioError) }
            return try finish(.ok)
        case .identify:
            let count = try rings.scatter((identifier + [UInt8](repeating: 0, count: 20 - identifier.count))[...], into: dataIn)
            return try finish(.ok, dataWritten: count)
        }
    }

    /// The byte offset of a request that lies wholly inside the disk, or nil.
    private func range(sector: UInt64, length: Int, capacity: UInt64) -> UInt64? {
        guard length % Int(Self.sectorSize) == 0, length <= Self.maximumRequest else { return nil }
        let (offset, overflow) = sector.multipliedReportingOverflow(by: Self.sectorSize)
        guard !overflow, offset <= capacity, UInt64(length) <= capacity - offset else { return nil }
        return offset
    }
}
