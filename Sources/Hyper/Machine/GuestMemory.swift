#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The guest's RAM: one anonymous host mapping, visible to the guest at guest-physical address 0.
///
/// This is the only window into guest memory. Every access is bounds-checked against the mapping, with
/// overflow-safe arithmetic, because every address and length a guest hands us is hostile until checked.
/// The mapping is released when the value is.
public final class GuestMemory: @unchecked Sendable {
    /// The size in bytes.
    public let size: UInt64
    /// The mapping's host address, kept as an integer; `pointer(at:)` turns it into a pointer after a check.
    private let baseAddress: UInt

    /// Maps `size` bytes of zeroed memory (rounded up to whole pages), reserving no swap up front.
    public init(size: UInt64) throws(HyperError) {
        let page: UInt64 = 4096
        guard size > 0, size <= 1 << 40 else { throw HyperError(.invalidArgument, "guest memory of \(size) bytes is out of range") }
        let rounded = (size + page - 1) / page * page
        // SAFETY: an anonymous private mapping with no address hint; the result is checked before use.
        let mapped = unsafe mmap(nil, Int(rounded), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        // SAFETY (below): comparing the returned pointer with MAP_FAILED reads no memory.
        let address = UInt(bitPattern: mapped)
        guard address != 0, unsafe mapped != MAP_FAILED else {
            throw HyperError(.hostFailure, "cannot map \(Units.formatSize(rounded)) of guest memory: \(HostSystem.errorText(errno))")
        }
        self.size = rounded
        self.baseAddress = address
    }

    /// Maps the file at `path` (exactly `size` bytes, a multiple of the page size) copy-on-write: pages are
    /// read from the file only when touched, writes stay private to this memory, and several memories mapped
    /// from one file share the pages none of them changed.
    public init(mappingCopyOnWrite path: String, size: UInt64) throws(HyperError) {
        guard size > 0, size <= 1 << 40, size % 4096 == 0 else { throw HyperError(.invalidArgument, "guest memory of \(size) bytes is out of range") }
        let file: (descriptor: Int32, size: UInt64)
        do { file = try HostSystem.openFile(path, writable: false) } catch { throw HyperError(.invalidArgument, "snapshot memory: \(error)") }
        defer { close(file.descriptor) }
        guard file.size == size else {
            throw HyperError(.invalidArgument, "snapshot memory: \(path) holds \(file.size) bytes, not the \(size) the snapshot records (truncated?)")
        }
        // SAFETY: a private mapping of the whole file with no address hint; the result is checked before use.
        let mapped = unsafe mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, file.descriptor, 0)
        // SAFETY (below): comparing the returned pointer with MAP_FAILED reads no memory.
        let address = UInt(bitPattern: mapped)
        guard address != 0, unsafe mapped != MAP_FAILED else {
            throw HyperError(.hostFailure, "cannot map the snapshot's memory: \(HostSystem.errorText(errno))")
        }
        self.size = size
        self.baseAddress = address
    }

    deinit {
        // SAFETY: the mapping came from mmap with exactly this length and is not used after deinit.
        _ = unsafe munmap(pointer(at: 0), Int(size))
    }

    /// The host virtual address of guest-physical 0, for an accelerator to map the memory into the VM.
    public var hostAddress: UInt64 { UInt64(baseAddress) }

    /// Returns a pointer to guest-physical `address`; callers check the range first.
    private func pointer(at address: UInt64) -> UnsafeMutableRawPointer {
        // SAFETY: baseAddress is a live mapping of `size` bytes; every caller checked address + count <= size.
        unsafe UnsafeMutableRawPointer(bitPattern: baseAddress + UInt(address))!
    }

    /// Returns whether `[address, address + count)` lies inside guest memory.
    public func contains(_ address: UInt64, count: UInt64) -> Bool {
        let (end, overflow) = address.addingReportingOverflow(count)
        return !overflow && end <= size
    }

    private func check(_ address: UInt64, _ count: Int) throws(HyperError) {
        guard count >= 0, contains(address, count: UInt64(count)) else {
            throw HyperError(.invalidArgument, "guest access of \(count) bytes at 0x\(String(address, radix: 16)) is outside guest memory (\(Units.formatSize(size)))")
        }
    }

    /// Reads `count` bytes at `address`.
    public func read(_ count: Int, at address: UInt64) throws(HyperError) -> [UInt8] {
        try check(address, count)
        // SAFETY: the range was checked to lie inside the mapping; the bytes are copied out.
        return unsafe Array(UnsafeRawBufferPointer(start: pointer(at: address), count: count))
    }

    /// Writes `bytes` at `address`.
    public func write(_ bytes: [UInt8], at address: UInt64) throws(HyperError) {
        try check(address, bytes.count)
        // SAFETY: the range was checked to lie inside the mapping.
        guard !bytes.isEmpty else { return }
        unsafe bytes.withUnsafeBytes { source in unsafe pointer(at: address).copyMemory(from: source.baseAddress!, byteCount: source.count) }
    }

    /// Fills `count` bytes at `address` with zeros.
    public func zero(_ count: Int, at address: UInt64) throws(HyperError) {
        try check(address, count)
        // SAFETY: the range was checked to lie inside the mapping.
        _ = unsafe memset(pointer(at: address), 0, count)
    }

    /// Reads a little-endian integer at `address`.
    public func read<T: FixedWidthInteger>(_ type: T.Type, at address: UInt64) throws(HyperError) -> T {
        let bytes = try read(MemoryLayout<T>.size, at: address)
        return bytes.enumerated().reduce(T.zero) { $0 | T($1.element) << T($1.offset * 8) }
    }

    /// Writes a little-endian integer at `address`.
    public func write<T: FixedWidthInteger>(_ value: T, at address: UInt64) throws(HyperError) {
        try write((0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> T($0 * 8)) }, at: address)
    }
}
