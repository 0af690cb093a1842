/// One proxied connection's flow control, kept the same way by both ends of the control channel (the
/// host's bridge and the guest agent's relay): the bytes from the peer still to be written out locally,
/// the bytes sent to the peer that it has not acknowledged, and each direction's end. The rules of
/// `connection-data`, `-acknowledge` and `-close` live here once.
public struct ConnectionFlow: Sendable {
    /// Bytes from the peer not yet written to the local socket.
    public var pending: [UInt8] = []
    /// Bytes sent to the peer that it has not acknowledged.
    public private(set) var unacknowledged = 0
    /// The peer sends nothing more.
    public private(set) var peerClosed = false
    /// The local socket's side ended, and `connection-close` went to the peer.
    public var localClosed = false

    /// A connection with both directions open.
    public init() {}

    /// Whether to read more from the local socket: its side is open and the window has room.
    public var mayRead: Bool { !localClosed && unacknowledged < AgentProtocol.connectionWindow }

    /// Whether the connection is over: both sides closed and everything written out.
    public var isFinished: Bool { peerClosed && localClosed && pending.isEmpty }

    /// Takes the peer's bytes; refuses data after its close or beyond its window.
    public mutating func receive(_ bytes: [UInt8], connection id: UInt32) throws(AgentProtocolError) {
        guard !peerClosed else { throw .malformed("data on connection \(id) after its close") }
        guard pending.count + bytes.count <= AgentProtocol.connectionWindow else {
            throw .malformed("connection \(id) sent beyond its window")
        }
        pending += bytes
    }

    /// Records `count` bytes written out locally; returns the acknowledgement to send the peer, if any.
    public mutating func wrote(_ count: Int, connection id: UInt32) -> AgentMessage? {
        guard count > 0 else { return nil }
        pending.removeFirst(min(count, pending.count))
        return .connectionAcknowledge(id, UInt32(count))
    }

    /// Records bytes sent to the peer.
    public mutating func sent(_ count: Int) { unacknowledged += count }

    /// Records the peer's acknowledgement.
    public mutating func acknowledged(_ count: UInt32) { unacknowledged -= min(Int(count), unacknowledged) }

    /// Records the peer's close.
    public mutating func peerDidClose() { peerClosed = true }
}
