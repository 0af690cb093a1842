import Foundation
import Hyper
import Testing
@testable import HyperProcess

/// A host web server on 127.0.0.1, stopped by the caller: python's http.server over /usr/share, or with
/// `echoingAuthorization`, one that answers every GET with the request's `Authorization` header as its body.
final class HostWebServer {
    let port: UInt16
    private let process: Process

    static let authorizationEcho = """
        import http.server, sys
        class Echo(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = ("authorization=%s\\n" % self.headers.get("Authorization", "")).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *args):
                pass
        http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
        """

    init(echoingAuthorization: Bool = false) throws {
        port = UInt16.random(in: 20_000...40_000)
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = echoingAuthorization
            ? ["-c", Self.authorizationEcho, String(port)]
            : ["-m", "http.server", String(port), "--bind", "127.0.0.1", "--directory", "/usr/share"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<200 {
            if let fd = try? HostSockets.connect(to: IPAddress("127.0.0.1")!, port: port) {
                HostSystem.closeDescriptor(fd)
                return
            }
            usleep(20_000)
        }
    }

    func stop() {
        // SIGKILL: a child started from a test thread may inherit a mask that blocks SIGTERM.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

/// A python script for inside the sandbox: one request per argument, each `HOST:PORT` fetched through the
/// sandbox's proxy (127.0.0.1:3128) as plain HTTP, or `connect:HOST:PORT` as a CONNECT; prints each status line.
let proxyClient = """
import socket, sys
for target in sys.argv[1:]:
    s = socket.create_connection(("127.0.0.1", 3128))
    if target.startswith("connect:"):
        s.sendall(("CONNECT %s HTTP/1.1\\r\\n\\r\\n" % target[8:]).encode())
    else:
        s.sendall(("GET http://%s/ HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n" % (target, target)).encode())
    print(target, s.recv(4096).decode(errors="replace").split("\\r\\n")[0])
"""

@Suite("Egress through the host proxy, and injected secrets, in real sandboxes", .serialized,
       .enabled(if: processSandboxesAvailable && python3Available, "needs process sandboxes and python3"))
struct EgressSandboxTests {
    @Test func onlyTheAllowlistGetsOutAndEveryDecisionIsReported() throws {
        let server = try HostWebServer()
        defer { server.stop() }
        let port = server.port
        let run = try runSandboxed(["python3", "-c", proxyClient, "127.0.0.1:\(port)", "connect:127.0.0.1:\(port)", "127.0.0.1:\(port + 1)",
                                    "example.org:80", "169.254.169.254:80", "localhost:\(port + 2)", "10.0.0.1:\(port)"]) { spec in
            spec.network = .allow([NetworkDestination(host: "127.0.0.1", port: port), NetworkDestination(host: "localhost", port: port + 2)])
        }
        #expect(run.exit == .exited(0), "\(run.errorOutput)")
        let lines = run.output.split(separator: "\n").map(String.init)
        #expect(lines.count == 7)
        #expect(lines[0].hasSuffix("HTTP/1.0 200 OK"), "an allowed host answers through the proxy")
        #expect(lines[1].hasSuffix("HTTP/1.1 200 Connection established"))
        for line in lines.dropFirst(2) { #expect(line.hasSuffix("HTTP/1.1 403 Forbidden"), "\(line)") }
        #expect(run.errorOutput.contains("hyperctl: egress denied: 169.254.169.254:80"))
        #expect(run.errorOutput.contains("localhost resolves to"))

        guard case let .array(decisions)? = run.details.first(where: { $0.0 == "egress" })?.1 else {
            Issue.record("no egress decisions in the report")
            return
        }
        #expect(decisions.count == 7)
        #expect(decisions.map { $0["allowed"] } == [.bool(true), .bool(true)] + Array(repeating: .bool(false), count: 5))
        #expect(decisions[0]["host"] == .string("127.0.0.1") && decisions[0]["port"] == .number(Double(port)))
        if case let .number(bytes)? = decisions[0]["bytesIn"] { #expect(bytes > 0) }
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: "/tmp"))?.filter { $0.hasPrefix("hyperctl-egress-sandbox-\(getpid())-") } ?? []
        #expect(leftovers.isEmpty, "the proxy's folder is removed: \(leftovers)")
    }

    @Test func theEnvironmentNamesTheProxyAndThereIsNoOtherWayOut() throws {
        let server = try HostWebServer()
        defer { server.stop() }
        let run = try runScript("""
            echo "$HTTP_PROXY $HTTPS_PROXY $NO_PROXY"
            python3 -c 'import socket; socket.create_connection(("127.0.0.1", \(server.port)), timeout=2)' 2>/dev/null && echo direct || echo no-direct
            """) { $0.network = .allow([NetworkDestination(host: "127.0.0.1", port: server.port)]) }
        #expect(run.output == "http://127.0.0.1:3128 http://127.0.0.1:3128 localhost,127.0.0.1,::1\nno-direct\n")
    }

    @Test func theBoundHostGetsTheValueWhileTheSandboxSeesOnlyThePlaceholder() throws {
        let bound = try HostWebServer(echoingAuthorization: true)
        defer { bound.stop() }
        let other = try HostWebServer(echoingAuthorization: true)
        defer { other.stop() }
        let variable = "HYPERCTL_TEST_INJECTED_\(UInt32.random(in: 0...UInt32.max))"
        let value = "injected-\(UUID().uuidString)"
        setenv(variable, value, 1)
        defer { unsetenv(variable) }
        let run = try runScript("""
            echo "$TOKEN"
            cat /run/secrets/TOKEN; echo
            python3 -c '\(authorizedClient)' 127.0.0.1:\(bound.port) 127.0.0.1:\(other.port)
            python3 -c '\(proxyClient)' connect:127.0.0.1:\(bound.port)
            cat /proc/self/environ /proc/1/environ /run/secrets/* 2>/dev/null | grep -c injected-
            """) { spec in
            spec.network = .allow([NetworkDestination(host: "127.0.0.1", port: bound.port), NetworkDestination(host: "127.0.0.1", port: other.port)])
            spec.secrets = [Secret(name: "TOKEN", source: .environment(variable), injectedInto: [NetworkDestination(host: "127.0.0.1", port: bound.port)])]
        }
        let lines = run.output.split(separator: "\n").map(String.init)
        #expect(lines.count == 6, "\(run.output) \(run.errorOutput)")
        guard lines.count == 6 else { return }
        let placeholder = lines[0]
        #expect(placeholder.hasPrefix("hyperctl-placeholder-TOKEN-") && placeholder.count > 40, "$TOKEN is the placeholder")
        #expect(lines[1] == placeholder, "the file holds the placeholder too")
        #expect(lines[2] == "authorization=Bearer \(value)", "the bound host gets the value")
        #expect(lines[3] == "authorization=Bearer \(placeholder)", "another host gets only the placeholder")
        #expect(lines[4].hasSuffix("403 Forbidden"), "a tunnel to the bound host is refused")
        #expect(lines[5] == "0", "the value is nowhere inside")
        #expect(!run.errorOutput.contains(value))
        #expect(run.errorOutput.contains("does not terminate TLS"))
        guard case let .array(decisions)? = run.details.first(where: { $0.0 == "egress" })?.1 else {
            Issue.record("no egress decisions in the report")
            return
        }
        #expect(decisions.map { $0["injectedSecrets"] } == [.array([.string("TOKEN")]), .array([]), .array([])])
        #expect(!JSONValue.array(decisions).compactText.contains(value))
    }
}

/// A python script for inside the sandbox: for each `HOST:PORT` argument, a plain-HTTP GET through the proxy
/// with `Authorization: Bearer $TOKEN`; prints the response's last line (the echo server's body).
let authorizedClient = """
import os, socket, sys
for target in sys.argv[1:]:
    s = socket.create_connection(("127.0.0.1", 3128))
    s.sendall(("GET http://%s/ HTTP/1.1\\r\\nHost: %s\\r\\nAuthorization: Bearer %s\\r\\n\\r\\n" % (target, target, os.environ["TOKEN"])).encode())
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    print(data.decode(errors="replace").rstrip("\\n").split("\\n")[-1])
"""

@Suite("Secrets delivered as files, in real sandboxes", .serialized, .enabled(if: processSandboxesAvailable, "needs process sandboxes"))
struct SecretFileTests {
    @Test func aSecretIsAReadOnlyFileAndNowhereElse() throws {
        let value = "s3cr3t-\(UUID().uuidString)"
        let path = NSTemporaryDirectory() + "hyperctl-secret-\(UUID().uuidString)"
        try Data(value.utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let run = try runScript("""
            cat /run/secrets/API_TOKEN; echo
            ls -l /run/secrets | tail -1 | cut -c1-10
            echo changed > /run/secrets/API_TOKEN 2>/dev/null && echo writable || echo read-only
            env | grep -c s3cr3t
            cat /proc/self/cmdline /proc/1/cmdline /proc/1/environ 2>/dev/null | grep -c s3cr3t
            """) { $0.secrets = [Secret(name: "API_TOKEN", source: .file(path))] }
        #expect(run.output == "\(value)\n-rw-r--r--\nread-only\n0\n0\n", "\(run.errorOutput)")
        #expect(!run.errorOutput.contains(value))
    }

    @Test func anUnreadableSecretNamesItselfNotAValue() {
        #expect {
            _ = try runSandboxed(["true"]) { $0.secrets = [Secret(name: "TOKEN", source: .environment("HYPERCTL_TEST_UNSET_VARIABLE"))] }
        } throws: { error in
            "\(error)".contains("TOKEN") && "\(error)".contains("HYPERCTL_TEST_UNSET_VARIABLE")
        }
    }
}
