/// virtio-rng: fills the guest's buffers with bytes from a host source (the kernel's random pool).
public final class VirtioEntropy: VirtioDevice {
    public let deviceType: UInt32 = 4
    public let deviceFeatures: UInt64 = 0
    public let queueSizes: [UInt16] = [64]
    /// The most bytes one request gets.
    static let maximumRequest = 64 * 1024
    private let source: (Int) -> [UInt8]

    /// Creates the device over `source`, which returns that many random bytes.
    public init(source: @escaping (Int) -> [UInt8]) {
        self.source = source
    }

    public func readConfiguration(offset: UInt64, size: Int) -> UInt64 { 0 }

    public func process(queue index: Int, rings: VirtioRings) throws(VirtQueueError) {
        while let chain = try rings.pop(0) {
            let wanted = min(chain.writable.reduce(0) { $0 + Int($1.length) }, Self.maximumRequest)
            let written = wanted > 0 ? try rings.scatter(source(wanted)[...], into: chain.writable) : 0
            try rings.push(0, head: chain.head, written: UInt32(written))
        }
    }
}
