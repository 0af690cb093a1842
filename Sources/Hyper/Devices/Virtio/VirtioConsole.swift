/// virtio-console with one port (no multiport): the guest's /dev/hvc0, our control channel to the agent.
///
/// Queue 0 (receive) carries host bytes into the guest; queue 1 (transmit) carries the guest's bytes out
/// to `onOutput`. Host bytes wait in `pending` until the driver posts receive buffers.
public final class VirtioConsole: VirtioDevice {
    public let deviceType: UInt32 = 3
    public let deviceFeatures: UInt64 = 0
    public let queueSizes: [UInt16] = [256, 256]
    /// The most a single transmit chain may hand over (larger chains are truncated to this).
    static let maximumChunk = 1 << 20

    /// Receives what the guest wrote. Called with the transport's lock held: it must not call back into
    /// the transport, and should return quickly.
    public var onOutput: ([UInt8]) -> Void
    /// Called (lock held) after host bytes moved into the guest, so a sender can top up.
    public var onDelivered: () -> Void = {}
    /// Asked (lock held) before each transmit chain is taken: false leaves the guest's output in its ring,
    /// which stalls the guest's writes until the host catches up and calls `resumeOutput`.
    public var acceptsOutput: () -> Bool = { true }
    private var pending: [UInt8] = []
    private var pendingStart = 0

    /// Creates a console that passes guest output to `onOutput`.
    public init(onOutput: @escaping ([UInt8]) -> Void) {
        self.onOutput = onOutput
    }

    /// Bytes waiting for receive buffers.
    public var pendingCount: Int { pending.count - pendingStart }

    public func readConfiguration(offset: UInt64, size: Int) -> UInt64 { 0 }

    public func process(queue index: Int, rings: VirtioRings) throws(VirtQueueError) {
        switch index {
        case 0:
            try deliver(rings)
        case 1:
            while acceptsOutput(), let chain = try rings.pop(1) {
                let bytes = try rings.gather(chain.readable, limit: Self.maximumChunk)
                try rings.push(1, head: chain.head, written: 0)
                if !bytes.isEmpty { onOutput(bytes) }
            }
        default:
            break
        }
    }

    /// Takes the guest output that waited while `acceptsOutput` said no. Call it through `perform`.
    public func resumeOutput(rings: VirtioRings) throws(VirtQueueError) {
        try process(queue: 1, rings: rings)
    }

    /// Queues host bytes for the guest and delivers what fits now. Call it through `perform`.
    public func enqueue(_ bytes: [UInt8], rings: VirtioRings) throws(VirtQueueError) {
        pending += bytes
        try deliver(rings)
    }

    private func deliver(_ rings: VirtioRings) throws(VirtQueueError) {
        var moved = false
        while pendingCount > 0, let chain = try rings.pop(0) {
            let count = try rings.scatter(pending[pendingStart...], into: chain.writable)
            try rings.push(0, head: chain.head, written: UInt32(count))
            pendingStart += count
            moved = true
        }
        if pendingStart == pending.count {
            pending.removeAll(keepingCapacity: true)
            pendingStart = 0
        } else if pendingStart > 1 << 20 {
            pending.removeFirst(pendingStart)
            pendingStart = 0
        }
        if moved { onDelivered() }
    }

    public func reset() {
        pending = []
        pendingStart = 0
    }
}
