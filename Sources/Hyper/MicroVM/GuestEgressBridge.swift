#if canImport(Glibc)
import Glibc
#endif
import HyperAgentProtocol

/// Carries a microVM's connections to the egress proxy. The guest agent listens on the guest's
/// 127.0.0.1:3128 and multiplexes each connection on the control channel (`connectionOpen`, `connectionData`,
/// `connectionAcknowledge`, `connectionClose`); here each becomes a socket pair whose other end the proxy
/// serves as if a client had connected to it. One thread polls them all. Each direction keeps at most
/// `AgentProtocol.connectionWindow` bytes unacknowledged, so a connection nobody reads cannot fill the host's
/// memory or stall the channel. Everything the guest sends is checked: an unknown connection, data beyond
/// the window or a connection too many ends the session as a protocol violation, or is refused.
final class GuestEgressBridge: @unchecked Sendable {
    /// One connection, as the bridge thread sees it.
    private struct Connection {
        /// The bridge's end of the socket pair; -1 for a connection refused at its open.
        var local: Int32
        var flow = ConnectionFlow()
    }

    private let proxy: EgressProxy
    private let send: @Sendable (AgentMessage) -> Void
    private let wake: HostEvent
    private let inbox = Locked<[AgentMessage]>([])
    private let stopped = Locked<Bool>(false)
    private let violation = Locked<String?>(nil)
    private let thread = Locked<HostThread?>(nil)
    /// Touched only on the bridge thread.
    private var connections: [UInt32: Connection] = [:]

    /// Starts the bridge; `send` puts a message on the control channel (from the bridge thread).
    init(proxy: EgressProxy, send: @escaping @Sendable (AgentMessage) -> Void) throws(HyperError) {
        self.proxy = proxy
        self.send = send
        wake = try HostEvent()
        let started = try HostThread.start { [self] in run() }
        thread.withLock { $0 = started }
    }

    /// Why the bridge gave up on the guest, if it did: the session ends with it.
    var protocolViolation: String? { violation.value }

    /// Hands over a connection message from the guest (on the session thread).
    func deliver(_ message: AgentMessage) {
        inbox.withLock { $0.append(message) }
        wake.signal()
    }

    /// Closes every connection and stops the thread.
    func stop() {
        stopped.withLock { $0 = true }
        wake.signal()
        thread.withLock { held in
            held?.join()
            held = nil
        }
    }

    private func run() {
        while !stopped.value {
            let ids = Array(connections.keys)
            var watched: [(descriptor: Int32, events: Int16)] = [(wake.descriptor, Int16(POLLIN))]
            for id in ids {
                guard let connection = connections[id] else { continue }
                var events: Int16 = 0
                if connection.flow.mayRead { events |= Int16(POLLIN) }
                if !connection.flow.pending.isEmpty { events |= Int16(POLLOUT) }
                watched.append((connection.local, events))
            }
            let seen = HostSystem.waitEvents(watched, milliseconds: -1)
            wake.clear()
            for message in inbox.withLock({ list in defer { list = [] }; return list }) {
                handle(message)
            }
            for (index, id) in ids.enumerated() where seen[index + 1] != 0 {
                if seen[index + 1] & Int16(POLLOUT | POLLERR | POLLHUP) != 0 { flush(id) }
                if seen[index + 1] & Int16(POLLIN | POLLERR | POLLHUP) != 0 { receive(id) }
            }
        }
        for connection in connections.values { HostSystem.closeDescriptor(connection.local) }
        connections = [:]
    }

    private func refuse(_ what: String) {
        violation.withLock { if $0 == nil { $0 = what } }
    }

    private func handle(_ message: AgentMessage) {
        switch message {
        case let .connectionOpen(id):
            guard connections[id] == nil else { return refuse("connection \(id) opened twice") }
            guard connections.count < AgentProtocol.maximumConnections,
                  let (local, remote) = try? HostSockets.socketPair() else {
                send(.connectionClose(id))  // Refused: the guest closes its client.
                var refused = Connection(local: -1)
                refused.flow.localClosed = true
                connections[id] = refused
                return
            }
            connections[id] = Connection(local: local)
            proxy.serve(connection: remote)
        case let .connectionData(id, bytes):
            guard var connection = connections[id] else { return refuse("data on connection \(id), which is not open") }
            do { try connection.flow.receive(bytes, connection: id) } catch { return refuse("\(error)") }
            if connection.local < 0, let acknowledgement = connection.flow.wrote(bytes.count, connection: id) {
                send(acknowledgement)  // A refused connection: dropped.
            }
            connections[id] = connection
            flush(id)
        case let .connectionAcknowledge(id, count):
            guard var connection = connections[id] else { return }  // Late, after the connection ended.
            connection.flow.acknowledged(count)
            connections[id] = connection
        case let .connectionClose(id):
            guard var connection = connections[id] else { return refuse("close of connection \(id), which is not open") }
            connection.flow.peerDidClose()
            connections[id] = connection
            flush(id)
        default:
            refuse("\(message) is not a connection message")
        }
    }

    /// Writes what the proxy takes of the pending bytes, acknowledging them; passes the guest's close on.
    private func flush(_ id: UInt32) {
        guard var connection = connections[id], connection.local >= 0 else { return finishIfDone(id) }
        if !connection.flow.pending.isEmpty {
            // The proxy side gone, what waits is dropped, acknowledged so the guest is not held up.
            let written = (try? HostSockets.sendAvailable(connection.local, connection.flow.pending[...])) ?? connection.flow.pending.count
            if let acknowledgement = connection.flow.wrote(written, connection: id) { send(acknowledgement) }
        }
        if connection.flow.peerClosed && connection.flow.pending.isEmpty { HostSockets.shutdownWrite(connection.local) }
        connections[id] = connection
        finishIfDone(id)
    }

    /// Sends the guest what the proxy wrote; at its end, the close.
    private func receive(_ id: UInt32) {
        guard var connection = connections[id], connection.local >= 0, !connection.flow.localClosed else { return }
        let bytes = (try? HostSystem.readSome(connection.local, count: AgentProtocol.chunkSize)) ?? []
        if bytes.isEmpty {
            connection.flow.localClosed = true
            send(.connectionClose(id))
        } else {
            connection.flow.sent(bytes.count)
            send(.connectionData(id, bytes))
        }
        connections[id] = connection
        finishIfDone(id)
    }

    private func finishIfDone(_ id: UInt32) {
        guard let connection = connections[id], connection.flow.isFinished else { return }
        if connection.local >= 0 { HostSystem.closeDescriptor(connection.local) }
        connections[id] = nil
    }
}
