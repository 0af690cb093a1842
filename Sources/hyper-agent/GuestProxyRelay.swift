import CHyperAgent
import Glibc
import HyperAgentProtocol

/// The in-guest end of the egress proxy: a listener on the guest's 127.0.0.1 whose connections are
/// multiplexed on the control channel to the host's proxy. It runs inside the agent's poll loop. Each
/// direction keeps at most `AgentProtocol.connectionWindow` bytes unacknowledged.
final class GuestProxyRelay {
    private struct Connection {
        var fd: Int32
        /// Bytes from the host still to be written to the client.
        var pending: [UInt8] = []
        /// Bytes sent to the host that it has not acknowledged.
        var unacknowledged = 0
        /// The client ended its side; `connectionClose` went to the host.
        var clientClosed = false
        /// The host sends nothing more.
        var hostClosed = false
    }

    private let listener: Int32
    private let send: (AgentMessage) -> Void
    private var connections: [UInt32: Connection] = [:]
    private var nextIdentifier: UInt32 = 1

    init(port: UInt16, send: @escaping (AgentMessage) -> Void) throws(AgentError) {
        listener = chyper_agent_loopback_listen(port)
        guard listener >= 0 else { throw AgentError.system("listen on 127.0.0.1:\(port) for the egress proxy", errno) }
        self.send = send
    }

    /// What to poll: the listener, and each connection for reading (within its window) and writing.
    var watched: [(Int32, Int16)] {
        var list: [(Int32, Int16)] = [(listener, Int16(POLLIN))]
        for connection in connections.values {
            var events: Int16 = 0
            if !connection.clientClosed && connection.unacknowledged < AgentProtocol.connectionWindow { events |= Int16(POLLIN) }
            if !connection.pending.isEmpty { events |= Int16(POLLOUT) }
            list.append((connection.fd, events))
        }
        return list
    }

    /// Handles poll events on one of `watched`'s descriptors; false when it is not one of them.
    func handle(descriptor: Int32, events: Int16) -> Bool {
        if descriptor == listener {
            acceptAll()
            return true
        }
        guard let id = connections.first(where: { $0.value.fd == descriptor })?.key else { return false }
        if events & Int16(POLLOUT | POLLERR | POLLHUP) != 0 { flush(id) }
        if events & Int16(POLLIN | POLLERR | POLLHUP) != 0 { receive(id) }
        return true
    }

    /// Handles a connection message from the host.
    func handle(_ message: AgentMessage) throws(AgentError) {
        switch message {
        case let .connectionData(id, bytes):
            guard var connection = connections[id], !connection.hostClosed else {
                throw AgentError.protocolViolation("data on connection \(id), which is not open")
            }
            guard connection.pending.count + bytes.count <= AgentProtocol.connectionWindow else {
                throw AgentError.protocolViolation("connection \(id) sent beyond its window")
            }
            connection.pending += bytes
            connections[id] = connection
            flush(id)
        case let .connectionAcknowledge(id, count):
            guard var connection = connections[id] else { return }
            connection.unacknowledged -= min(Int(count), connection.unacknowledged)
            connections[id] = connection
        case let .connectionClose(id):
            guard var connection = connections[id] else { return }
            connection.hostClosed = true
            connections[id] = connection
            flush(id)
        default:
            throw AgentError.protocolViolation("\(message) is not a connection message")
        }
    }

    private func acceptAll() {
        while true {
            let fd = chyper_agent_accept(listener)
            guard fd >= 0 else { return }
            let id = nextIdentifier
            nextIdentifier &+= 1
            connections[id] = Connection(fd: fd)
            send(.connectionOpen(id))
        }
    }

    private func flush(_ id: UInt32) {
        guard var connection = connections[id] else { return }
        var written = 0
        while written < connection.pending.count {
            let count = GuestSystem.send(connection.fd, connection.pending, from: written)
            if count > 0 {
                written += count
                continue
            }
            if count < 0 && errno == EINTR { continue }
            if count < 0 && errno == EAGAIN { break }
            // The client is gone: drop what waits for it (acknowledged, so the host is not held up).
            written = connection.pending.count
            if !connection.clientClosed {
                connection.clientClosed = true
                send(.connectionClose(id))
            }
        }
        if written > 0 {
            connection.pending.removeFirst(written)
            send(.connectionAcknowledge(id, UInt32(written)))
        }
        if connection.hostClosed && connection.pending.isEmpty { _ = shutdown(connection.fd, Int32(SHUT_WR)) }
        connections[id] = connection
        finishIfDone(id)
    }

    private func receive(_ id: UInt32) {
        guard var connection = connections[id], !connection.clientClosed else { return }
        let bytes = GuestSystem.read(connection.fd, count: AgentProtocol.chunkSize)
        if let bytes, !bytes.isEmpty {
            connection.unacknowledged += bytes.count
            send(.connectionData(id, bytes))
        } else if bytes != nil || (errno != EAGAIN && errno != EINTR) {
            connection.clientClosed = true
            send(.connectionClose(id))
        }
        connections[id] = connection
        finishIfDone(id)
    }

    private func finishIfDone(_ id: UInt32) {
        guard let connection = connections[id], connection.clientClosed, connection.hostClosed, connection.pending.isEmpty else { return }
        close(connection.fd)
        connections[id] = nil
    }
}
