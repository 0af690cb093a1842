import Foundation
import HyperAgentProtocol
import Synchronization
import Testing
@testable import Hyper

/// The host end of a microVM's proxied connections, driven with the messages a guest agent would send.
@Suite("Guest egress bridge", .serialized)
struct GuestEgressBridgeTests {
    /// What the bridge sent towards the guest.
    final class Sent: Sendable {
        let messages = Locked<[AgentMessage]>([])

        func waitFor(_ what: String, _ condition: ([AgentMessage]) -> Bool) throws {
            for _ in 0..<500 {
                if condition(messages.value) { return }
                usleep(10_000)
            }
            throw HyperError(.phaseFailed, "the bridge never sent \(what): \(messages.value)")
        }

        func data(_ id: UInt32) -> String {
            String(decoding: messages.value.flatMap { message -> [UInt8] in
                if case let .connectionData(of, bytes) = message, of == id { return bytes }
                return []
            }, as: UTF8.self)
        }
    }

    @Test func aGuestConnectionReachesTheProxyAndTheAnswerComesBack() throws {
        let server = try TestHTTPServer()
        defer { server.stop() }
        let proxy = try EgressProxy(policy: EgressPolicy(destinations: [NetworkDestination(host: "127.0.0.1", port: server.port)]), socketPath: nil)
        let sent = Sent()
        let bridge = try GuestEgressBridge(proxy: proxy) { message in sent.messages.withLock { $0.append(message) } }
        defer {
            bridge.stop()
            proxy.stop()
        }
        let request = "GET http://127.0.0.1:\(server.port)/ HTTP/1.1\r\n\r\n"
        bridge.deliver(.connectionOpen(1))
        bridge.deliver(.connectionData(1, Array(request.utf8)))
        try sent.waitFor("the acknowledgement") { $0.contains(.connectionAcknowledge(1, UInt32(request.utf8.count))) }
        try sent.waitFor("the close") { $0.contains(.connectionClose(1)) }
        #expect(sent.data(1).hasPrefix("HTTP/1.1 200 OK") && sent.data(1).hasSuffix("hello"))
        // A denied destination gets its 403 the same way.
        bridge.deliver(.connectionOpen(2))
        bridge.deliver(.connectionData(2, Array("CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n".utf8)))
        try sent.waitFor("the refusal") { $0.contains(.connectionClose(2)) }
        #expect(sent.data(2).hasPrefix("HTTP/1.1 403"))
        bridge.deliver(.connectionClose(1))
        bridge.deliver(.connectionClose(2))
        #expect(bridge.protocolViolation == nil)
        #expect(proxy.decisions.map(\.allowed) == [true, false])
    }

    @Test func theBridgeSendsNoMoreThanAWindowBeforeTheGuestAcknowledges() throws {
        // A server that sends far more than one window as soon as it is connected.
        let (listener, port) = try HostSockets.listenLoopbackTCP()
        let flood = [UInt8](repeating: 0x61, count: 4 * AgentProtocol.connectionWindow)
        let serverThread = try HostThread.start {
            guard let client = HostSockets.accept(listener) else { return }
            try? HostSockets.sendAll(client, flood)
            HostSystem.closeDescriptor(client)
        }
        defer {
            HostSockets.shutdownBoth(listener)
            serverThread.join()
            HostSystem.closeDescriptor(listener)
        }
        let proxy = try EgressProxy(policy: EgressPolicy(destinations: [NetworkDestination(host: "127.0.0.1", port: port)]), socketPath: nil)
        let sent = Sent()
        let bridge = try GuestEgressBridge(proxy: proxy) { message in sent.messages.withLock { $0.append(message) } }
        defer {
            bridge.stop()
            proxy.stop()
        }
        bridge.deliver(.connectionOpen(1))
        bridge.deliver(.connectionData(1, Array("CONNECT 127.0.0.1:\(port) HTTP/1.1\r\n\r\n".utf8)))
        try sent.waitFor("a window's worth") { _ in sent.data(1).utf8.count >= AgentProtocol.connectionWindow }
        usleep(200_000)
        let unacknowledged = sent.data(1).utf8.count
        #expect(unacknowledged >= AgentProtocol.connectionWindow && unacknowledged < AgentProtocol.connectionWindow + AgentProtocol.chunkSize,
                "it stops at the window: \(unacknowledged)")
        bridge.deliver(.connectionAcknowledge(1, UInt32(unacknowledged)))
        try sent.waitFor("more after the acknowledgement") { _ in sent.data(1).utf8.count > unacknowledged }
    }

    @Test func aGuestThatBreaksTheRulesIsNamed() throws {
        let proxy = try EgressProxy(policy: EgressPolicy(destinations: [NetworkDestination(host: "a.test")]), socketPath: nil)
        let bridge = try GuestEgressBridge(proxy: proxy) { _ in }
        defer {
            bridge.stop()
            proxy.stop()
        }
        bridge.deliver(.connectionData(9, [1]))
        for _ in 0..<200 where bridge.protocolViolation == nil { usleep(5_000) }
        #expect(bridge.protocolViolation?.contains("connection 9, which is not open") == true)

        let second = try GuestEgressBridge(proxy: proxy) { _ in }
        defer { second.stop() }
        second.deliver(.connectionOpen(1))
        second.deliver(.connectionData(1, [UInt8](repeating: 0, count: AgentProtocol.connectionWindow + 1)))
        for _ in 0..<200 where second.protocolViolation == nil { usleep(5_000) }
        #expect(second.protocolViolation?.contains("beyond its window") == true)
    }
}
