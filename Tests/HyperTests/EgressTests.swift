import Foundation
import Hyper
import Synchronization
import Testing

@Suite("Egress policy")
struct EgressPolicyTests {
    static func policy(_ text: String) throws -> EgressPolicy {
        guard case let .allow(list) = try NetworkPolicy.parse(text) else { throw HyperError(.invalidSpec, "not an allowlist") }
        return EgressPolicy(destinations: list)
    }

    static let publicAddress = IPAddress("93.184.216.34")!

    @Test func namesAndWildcardsOnTheListAreAllowed() throws {
        let policy = try Self.policy("allow:example.org:443,*.pythonhosted.org,api.test")
        let resolve: (String) -> [IPAddress] = { _ in [Self.publicAddress] }
        #expect(policy.decide(host: "example.org", port: 443, resolve: resolve) == .allow(Self.publicAddress))
        #expect(policy.decide(host: "EXAMPLE.org.", port: 443, resolve: resolve) == .allow(Self.publicAddress))
        #expect(policy.decide(host: "files.pythonhosted.org", port: 8443, resolve: resolve) == .allow(Self.publicAddress))
        #expect(policy.decide(host: "a.b.pythonhosted.org", port: 443, resolve: resolve) == .allow(Self.publicAddress))
        for (host, port) in [("example.org", 80), ("pythonhosted.org", 443), ("evilpythonhosted.org", 443), ("other.test", 443)] {
            guard case .deny = policy.decide(host: host, port: UInt16(port), resolve: resolve) else {
                Issue.record("\(host):\(port) was allowed")
                continue
            }
        }
    }

    @Test func addressesNeedAnExactEntryAndSomeNeverPass() throws {
        let policy = try Self.policy("allow:127.0.0.1:8080,10.1.2.3:22,169.254.169.254:80,[::1]:8080")
        #expect(policy.decide(host: "127.0.0.1", port: 8080) == .allow(IPAddress("127.0.0.1")!))
        #expect(policy.decide(host: "[::1]", port: 8080) == .allow(IPAddress("::1")!))
        #expect(policy.decide(host: "10.1.2.3", port: 22) == .allow(IPAddress("10.1.2.3")!))
        for (host, port, reason) in [("127.0.0.1", 8081, "names it with its port"), ("93.184.216.34", 443, "names it with its port"),
                                     ("169.254.169.254", 80, "cloud metadata"), ("[fe80::1]", 80, "link-local"),
                                     ("0.0.0.0", 80, "unspecified"), ("::ffff:169.254.169.254", 80, "metadata")] {
            guard case let .deny(why) = policy.decide(host: host, port: UInt16(port)) else {
                Issue.record("\(host):\(port) was allowed")
                continue
            }
            #expect(why.contains(reason), "\(host): \(why)")
        }
    }

    @Test func namesThatResolveIntoPrivateRangesAreRefused() throws {
        let policy = try Self.policy("allow:rebind.test:80,metadata.test,internal.test:5432,10.0.0.7:5432")
        #expect(policy.decide(host: "rebind.test", port: 80) { _ in [IPAddress("127.0.0.1")!] } == .deny("rebind.test resolves to 127.0.0.1, a loopback address the allowlist does not name"))
        #expect(policy.decide(host: "rebind.test", port: 80) { _ in [Self.publicAddress, IPAddress("192.168.1.1")!] } != .allow(Self.publicAddress))
        guard case .deny = policy.decide(host: "metadata.test", port: 80, resolve: { _ in [IPAddress("169.254.169.254")!] }) else {
            Issue.record("metadata allowed")
            return
        }
        // A private address the allowlist names exactly is fine, even through a name.
        #expect(policy.decide(host: "internal.test", port: 5432) { _ in [IPAddress("10.0.0.7")!] } == .allow(IPAddress("10.0.0.7")!))
        #expect(policy.decide(host: "rebind.test", port: 80) { _ in [] } == .deny("rebind.test does not resolve"))
    }
}

/// A one-shot HTTP server on 127.0.0.1 that answers "hello" and keeps the request head it saw.
final class TestHTTPServer: Sendable {
    let port: UInt16
    private let listener: Int32
    let received = Locked<[String]>([])

    init() throws {
        let (fd, port) = try HostSockets.listenLoopbackTCP()
        listener = fd
        self.port = port
        let received = self.received
        _ = try HostThread.start {
            while let client = HostSockets.accept(fd) {
                var head: [UInt8] = []
                while !String(decoding: head, as: UTF8.self).contains("\r\n\r\n"), let chunk = try? HostSystem.readSome(client), !chunk.isEmpty {
                    head += chunk
                }
                received.withLock { $0.append(String(decoding: head, as: UTF8.self)) }
                try? HostSystem.writeAll(client, Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".utf8))
                HostSystem.closeDescriptor(client)
            }
        }
    }

    func stop() { HostSockets.shutdownBoth(listener) }
}

/// Sends `request` through the proxy's socket and returns everything it answered.
func throughProxy(_ socket: String, _ request: String, thenSend more: String? = nil) throws -> String {
    let fd = try HostSockets.connectUnix(socket)
    defer { HostSystem.closeDescriptor(fd) }
    try HostSystem.writeAll(fd, Array(request.utf8))
    var answer: [UInt8] = []
    if let more {
        // A tunnel: wait for the 200, then speak HTTP through it.
        while !String(decoding: answer, as: UTF8.self).contains("\r\n\r\n"), let chunk = try? HostSystem.readSome(fd), !chunk.isEmpty { answer += chunk }
        try HostSystem.writeAll(fd, Array(more.utf8))
    }
    while let chunk = try? HostSystem.readSome(fd), !chunk.isEmpty { answer += chunk }
    return String(decoding: answer, as: UTF8.self)
}

@Suite("Egress proxy on real sockets", .serialized)
struct EgressProxyTests {
    @Test func allowedRequestsPassDeniedOnesGet403AndEveryDecisionIsRecorded() throws {
        let server = try TestHTTPServer()
        defer { server.stop() }
        let socket = NSTemporaryDirectory() + "hyperctl-proxy-\(UUID().uuidString.prefix(8)).sock"
        let logged = Locked<[String]>([])
        let proxy = try EgressProxy(policy: EgressPolicy(destinations: [NetworkDestination(host: "127.0.0.1", port: server.port),
                                                                         NetworkDestination(host: "localhost", port: server.port &+ 2)]),
                                    socketPath: socket) { record in logged.withLock { $0.append("\(record.host):\(record.port) \(record.allowed)") } }
        try proxy.start()
        defer { proxy.stop() }

        let plain = try throughProxy(socket, "GET http://127.0.0.1:\(server.port)/path?q=1 HTTP/1.1\r\nHost: 127.0.0.1:\(server.port)\r\nProxy-Connection: keep-alive\r\n\r\n")
        #expect(plain.hasPrefix("HTTP/1.1 200 OK") && plain.hasSuffix("hello"))
        let seen = server.received.value.first ?? ""
        #expect(seen.hasPrefix("GET /path?q=1 HTTP/1.1\r\n") && !seen.contains("Proxy-Connection") && seen.contains("Connection: close"))

        let tunnel = try throughProxy(socket, "CONNECT 127.0.0.1:\(server.port) HTTP/1.1\r\n\r\n",
                                      thenSend: "GET /tunnel HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(tunnel.hasPrefix("HTTP/1.1 200 Connection established") && tunnel.hasSuffix("hello"))

        for request in ["CONNECT 127.0.0.1:\(server.port &+ 1) HTTP/1.1\r\n\r\n", "CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n",
                        "GET http://localhost:\(server.port &+ 2)/ HTTP/1.1\r\n\r\n", "CONNECT example.org:443 HTTP/1.1\r\n\r\n"] {
            let answer = try throughProxy(socket, request)
            #expect(answer.hasPrefix("HTTP/1.1 403 Forbidden") && answer.contains("denied"), "\(request): \(answer)")
        }
        #expect(try throughProxy(socket, "GET /relative HTTP/1.1\r\n\r\n").hasPrefix("HTTP/1.1 400"))

        let decisions = proxy.decisions
        #expect(decisions.map(\.allowed) == [true, true, false, false, false, false])
        #expect(decisions[0].bytesIn > 0 && decisions[1].bytesOut > 0)
        #expect(decisions[4].reason?.contains("localhost resolves to 127.0.0.1") == true || decisions[4].reason?.contains("::1") == true)
        #expect(logged.value.count == 6)
    }

    @Test func injectedSecretsReplaceThePlaceholderOnlyForTheirDestination() throws {
        let server = try TestHTTPServer()
        defer { server.stop() }
        let variable = "HYPERCTL_TEST_PROXY_SECRET_\(UInt32.random(in: 0...UInt32.max))"
        setenv(variable, "real-value", 1)
        defer { unsetenv(variable) }
        var spec = SandboxSpec()
        spec.secrets = [Secret(name: "KEY", source: .environment(variable), injectedInto: [NetworkDestination(host: "127.0.0.1", port: server.port)])]
        let secrets = try SandboxSecrets.read(spec)
        let placeholder = try #require(secrets.entries.first?.placeholder)
        #expect(secrets.entries.first?.visibleValue == placeholder && !placeholder.contains("real-value"))
        #expect(secrets.placeholderEnvironment == [EnvironmentVariable(name: "KEY", value: placeholder)])
        let socket = NSTemporaryDirectory() + "hyperctl-proxy-\(UUID().uuidString.prefix(8)).sock"
        let proxy = try EgressProxy(policy: EgressPolicy(destinations: [NetworkDestination(host: "127.0.0.1", port: server.port)]),
                                    socketPath: socket, secrets: secrets)
        try proxy.start()
        defer { proxy.stop() }
        let answer = try throughProxy(socket, "GET http://127.0.0.1:\(server.port)/ HTTP/1.1\r\nX-Api-Key: \(placeholder)\r\nAuthorization: Bearer \(placeholder)\r\n\r\n")
        #expect(answer.hasSuffix("hello"))
        let seen = server.received.value.first ?? ""
        #expect(seen.contains("X-Api-Key: real-value\r\n") && seen.contains("Authorization: Bearer real-value\r\n") && !seen.contains(placeholder))
        let tunnel = try throughProxy(socket, "CONNECT 127.0.0.1:\(server.port) HTTP/1.1\r\n\r\n")
        #expect(tunnel.hasPrefix("HTTP/1.1 403") && tunnel.contains("does not terminate TLS"))
        #expect(proxy.decisions.map(\.injected) == [["KEY"], []])
        #expect(!proxy.decisions.map { $0.summary.compactText }.joined().contains("real-value"))
    }

    @Test func anInjectedValueMustFitInAHeader() {
        let variable = "HYPERCTL_TEST_PROXY_SECRET_\(UInt32.random(in: 0...UInt32.max))"
        setenv(variable, "two\nlines", 1)
        defer { unsetenv(variable) }
        var spec = SandboxSpec()
        spec.secrets = [Secret(name: "KEY", source: .environment(variable), injectedInto: [NetworkDestination(host: "a.test")])]
        #expect(throws: HyperError.self) { try SandboxSecrets.read(spec) }
    }
}
