/// The host's random pool: for virtio-rng, secrets' placeholders and sandbox names.
public final class HostRandom: Sendable {
    private let descriptor: Int32

    /// Opens the pool.
    public init() throws(HyperError) {
        do {
            descriptor = try HostSystem.openFile("/dev/urandom", writable: false).descriptor
        } catch {
            throw HyperError(.hostFailure, "random pool: \(error)")
        }
    }

    deinit { HostSystem.closeDescriptor(descriptor) }

    /// Up to `count` random bytes (fewer only if the read fails).
    func bytes(_ count: Int) -> [UInt8] { (try? HostSystem.readSome(descriptor, count: count)) ?? [] }

    /// `count` random bytes as lowercase hex digits.
    public func hex(bytes count: Int) throws(HyperError) -> String {
        let random = bytes(count)
        guard random.count == count else { throw HyperError(.hostFailure, "cannot read the host's random pool") }
        return random.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}
