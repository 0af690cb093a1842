/// The host's random pool: for virtio-rng and for secrets' placeholders.
final class HostRandom: Sendable {
    private let descriptor: Int32

    init() throws(HyperError) {
        do {
            descriptor = try HostSystem.openFile("/dev/urandom", writable: false).descriptor
        } catch {
            throw HyperError(.hostFailure, "random pool: \(error)")
        }
    }

    deinit { HostSystem.closeDescriptor(descriptor) }

    /// Up to `count` random bytes (fewer only if the read fails).
    func bytes(_ count: Int) -> [UInt8] { (try? HostSystem.readSome(descriptor, count: count)) ?? [] }
}
