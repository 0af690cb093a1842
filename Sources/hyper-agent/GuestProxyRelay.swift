import CHyperAgent
import Glibc
import HyperAgentProtocol

/// The in-guest end of the egress proxy: a listener on the guest's 127.0.0.1 whose connections are
/// multiplexed on the control channel to the host's proxy. It runs inside the agent's poll loop. Each
/// direction keeps at most `AgentProtocol.connectionWindow` bytes unacknowledged.
final class GuestProxyRelay {
    private struct Connection {
        /// The client's socket.
        var fd: Int32
        var flow = ConnectionFlow()
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
            if connection.flow.mayRead { events |= Int16(POLLIN) }
            if !connection.flow.pending.isEmpty { events |= Int16(POLLOUT) }
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
            guard var connection = connections[id] else { throw AgentError.protocolViolation("data on connection \(id), which is not open") }
            do { try connection.flow.receive(bytes, connection: id) } catch { throw AgentError.transfer(error) }
            connections[id] = connection
            flush(id)
        case let .connectionAcknowledge(id, count):
            guard var connection = connections[id] else { return }
            connection.flow.acknowledged(count)
            connections[id] = connection
        case let .connectionClose(id):
            guard var connection = connections[id] else { return }
            connection.flow.peerDidClose()
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
        while written < connection.flow.pending.count {
            let count = GuestSystem.send(connection.fd, connection.flow.pending, from: written)
            if count > 0 {
                written += count
                continue
            }
            if count < 0 && errno == EINTR { continue }
            if count < 0 && errno == EAGAIN { break }
            // The client is gone: drop what waits for it (acknowledged, so the host is not held up).
            written = connection.flow.pending.count
            if !connection.flow.localClosed {
                connection.flow.localClosed = true
                send(.connectionClose(id))
            }
        }
        if let acknowledgement = connection.flow.wrote(written, connection: id) { send(acknowledgement) }
        if connection.flow.peerClosed && connection.flow.pending.isEmpty { _ = shutdown(connection.fd, Int32(SHUT_WR)) }
        connections[id] = connection
        finishIfDone(id)
    }

    private func receive(_ id: UInt32) {
        guard var connection = connections[id], !connection.flow.localClosed else { return }
        let bytes = GuestSystem.read(connection.fd, count: AgentProtocol.chunkSize)
        if let bytes, !bytes.isEmpty {
            connection.flow.sent(bytes.count)
            send(.connectionData(id, bytes))
        } else if bytes != nil || (errno != EAGAIN && errno != EINTR) {
            connection.flow.localClosed = true
            send(.connectionClose(id))
        }
        connections[id] = connection
        finishIfDone(id)
    }

    private func finishIfDone(_ id: UInt32) {
        guard let connection = connections[id], connection.flow.isFinished else { return }
        close(connection.fd)
        connections[id] = nil
    }
}
