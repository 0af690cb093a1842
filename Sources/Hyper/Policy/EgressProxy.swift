/// The host-side egress proxy: a sandbox's only way out. It speaks HTTP CONNECT and plain HTTP forward
/// proxying on a Unix socket, lets through only what the `EgressPolicy` allows, answers everything else with
/// 403, and records every decision (host, port, verdict, bytes each way) for the sandbox's report. In plain-HTTP
/// requests to an injected secret's destinations it replaces the secret's placeholder in header values with the
/// value; it does not terminate TLS, so it refuses `CONNECT` to those destinations rather than send the placeholder.
public final class EgressProxy: @unchecked Sendable {
    /// One decision and what went through afterwards.
    public struct Record: Equatable, Sendable {
        public var host: String
        public var port: UInt16
        public var allowed: Bool
        /// Why it was refused, or nil.
        public var reason: String?
        public var bytesOut: UInt64 = 0
        public var bytesIn: UInt64 = 0
        /// The secrets whose values the proxy put into this request (names only).
        public var injected: [String] = []

        /// The record as a report shows it.
        public var summary: JSONValue {
            .object([("host", .string(host)), ("port", .integer(port)), ("allowed", .bool(allowed)),
                     ("reason", reason.map { .string($0) } ?? .null), ("bytesOut", .integer(bytesOut)), ("bytesIn", .integer(bytesIn)),
                     ("injectedSecrets", .array(injected.map { .string($0) }))])
        }
    }

    /// The largest request head accepted.
    static let maximumHead = 16 * 1024

    /// The Unix socket it listens on; nil for a proxy that serves only the connections handed to it.
    public let socketPath: String?
    private let policy: EgressPolicy
    private let secrets: SandboxSecrets
    private let listener: Int32
    private let onDecision: @Sendable (Record) -> Void
    private let records = Locked<[Record]>([])
    private let open = Locked<Set<Int32>>([])
    private let threads = HostThreadGroup()
    private let stopped = Locked<Bool>(false)

    /// Listens on `socketPath`, when given. `secrets` are the sandbox's secrets (the injected ones matter here);
    /// `onDecision` hears each decision as it is made (for a log line).
    public init(policy: EgressPolicy, socketPath: String?, secrets: SandboxSecrets = SandboxSecrets(),
                onDecision: @escaping @Sendable (Record) -> Void = { _ in }) throws(HyperError) {
        self.policy = policy
        self.secrets = secrets
        self.socketPath = socketPath
        self.onDecision = onDecision
        guard let socketPath else {
            listener = -1
            return
        }
        do { listener = try HostSockets.listenUnix(socketPath) } catch { throw HyperError(.hostFailure, "egress proxy: \(error)") }
    }

    deinit {
        guard let socketPath else { return }
        HostSystem.closeDescriptor(listener)
        HostSystem.removeQuietly(socketPath)
    }

    /// Every decision so far, in order.
    public var decisions: [Record] { records.value }

    /// Starts accepting connections on its socket, on a thread of its own.
    public func start() throws(HyperError) {
        guard socketPath != nil else { return }
        let thread = try HostThread.start { [self] in
            while let client = HostSockets.accept(listener) {
                guard !stopped.value else {
                    HostSystem.closeDescriptor(client)
                    break
                }
                serve(connection: client)
            }
        }
        threads.add(thread)
    }

    /// Serves one client connection (which it then owns) on a thread of its own.
    public func serve(connection client: Int32) {
        guard !stopped.value else {
            HostSystem.closeDescriptor(client)
            return
        }
        open.withLock { _ = $0.insert(client) }
        if let worker = try? HostThread.start({ [self] in serve(client) }) {
            threads.add(worker)
        } else {
            finish(client)
        }
    }

    /// Stops accepting, cuts every open connection and waits for the proxy's threads.
    public func stop() {
        stopped.withLock { $0 = true }
        if let socketPath {
            // A thread blocked in accept on a Unix socket is not woken by shutdown: a last connection wakes it.
            if let wake = try? HostSockets.connectUnix(socketPath) { HostSystem.closeDescriptor(wake) }
            HostSockets.shutdownBoth(listener)
        }
        for fd in open.value { HostSockets.shutdownBoth(fd) }
        threads.joinAll()
    }

    private func finish(_ fd: Int32) {
        open.withLock { _ = $0.remove(fd) }
        HostSystem.closeDescriptor(fd)
    }

    private func record(_ entry: Record) -> Int {
        onDecision(entry)
        return records.withLock { list in
            list.append(entry)
            return list.count - 1
        }
    }

    /// Serves one client connection to its end.
    private func serve(_ client: Int32) {
        defer { finish(client) }
        guard let (head, rest) = readHead(client), let request = ProxyRequest(head: head) else {
            try? HostSockets.sendAll(client, ProxyRequest.response(400, "hyperctl: the egress proxy takes CONNECT host:port or an absolute http:// URL\n"))
            return
        }
        let decision = policy.decide(host: request.host, port: request.port)
        let bound = secrets.injections(host: request.host, port: request.port)
        func deny(_ reason: String) {
            _ = record(Record(host: request.host, port: request.port, allowed: false, reason: reason))
            try? HostSockets.sendAll(client, ProxyRequest.response(403, "hyperctl: egress to \(request.host):\(request.port) denied: \(reason)\n"))
        }
        guard case let .allow(address) = decision else {
            if case let .deny(why) = decision { deny(why) } else { deny("refused") }
            return
        }
        if request.isTunnel, !bound.isEmpty {
            let names = bound.map(\.name).joined(separator: ", ")
            deny("the proxy injects \(names) into requests to this destination and does not terminate TLS, so a tunnel (HTTPS) to it "
                 + "would carry only the placeholder; use http:// for it, or deliver the secret as a file")
            return
        }
        let upstream: Int32
        do {
            upstream = try HostSockets.connect(to: address, port: request.port)
        } catch {
            _ = record(Record(host: request.host, port: request.port, allowed: false, reason: "\(error)"))
            try? HostSockets.sendAll(client, ProxyRequest.response(502, "hyperctl: cannot reach \(request.host):\(request.port): \(error)\n"))
            return
        }
        open.withLock { _ = $0.insert(upstream) }
        defer { finish(upstream) }
        var entry = Record(host: request.host, port: request.port, allowed: true, reason: nil)
        var outgoing: UInt64 = 0
        var forwarded: [UInt8] = []
        if !request.isTunnel {
            (forwarded, entry.injected) = request.forwardedHead(replacing: bound.compactMap { secret in
                secret.placeholder.map { ($0, secret.value, secret.name) }
            })
        }
        let index = record(entry)
        if request.isTunnel {
            try? HostSockets.sendAll(client, Array("HTTP/1.1 200 Connection established\r\n\r\n".utf8))
        } else {
            try? HostSockets.sendAll(upstream, forwarded)
            outgoing += UInt64(forwarded.count)
        }
        if !rest.isEmpty {
            try? HostSockets.sendAll(upstream, rest)
            outgoing += UInt64(rest.count)
        }
        let (sent, received) = relay(client, upstream)
        records.withLock { list in
            list[index].bytesOut = outgoing + sent
            list[index].bytesIn = received
        }
    }

    /// Reads up to the end of the request head; returns the head and any bytes after it.
    private func readHead(_ fd: Int32) -> ([UInt8], [UInt8])? {
        var bytes: [UInt8] = []
        while bytes.count < Self.maximumHead {
            guard let chunk = try? HostSystem.readSome(fd, count: 4096), !chunk.isEmpty else { return nil }
            bytes += chunk
            if let end = ProxyRequest.headEnd(bytes) { return (Array(bytes[..<end]), Array(bytes[end...])) }
        }
        return nil
    }

    /// Copies both ways until both sides are done; returns the bytes client → upstream and back.
    private func relay(_ client: Int32, _ upstream: Int32) -> (UInt64, UInt64) {
        var sent: UInt64 = 0, received: UInt64 = 0
        var clientOpen = true, upstreamOpen = true
        while clientOpen || upstreamOpen {
            let watched = (clientOpen ? [client] : []) + (upstreamOpen ? [upstream] : [])
            let ready = HostSystem.waitReadable(watched, milliseconds: -1)
            for (fd, isReady) in zip(watched, ready) where isReady {
                let other = fd == client ? upstream : client
                let chunk = (try? HostSystem.readSome(fd)) ?? []
                if chunk.isEmpty || (try? HostSockets.sendAll(other, chunk)) == nil {
                    HostSockets.shutdownWrite(other)
                    if fd == client { clientOpen = false } else { upstreamOpen = false }
                    if chunk.isEmpty { continue }
                    // The other side is gone: stop both.
                    clientOpen = false
                    upstreamOpen = false
                    break
                }
                if fd == client { sent += UInt64(chunk.count) } else { received += UInt64(chunk.count) }
            }
            if stopped.value { break }
        }
        return (sent, received)
    }
}

/// A request to the proxy: `CONNECT host:port` or an absolute-form `http://` request.
struct ProxyRequest {
    var method: String
    var host: String
    var port: UInt16
    /// For plain HTTP: the origin-form target (`/path?query`).
    var path: String
    var version: String
    var headers: [(name: String, value: String)]

    var isTunnel: Bool { method == "CONNECT" }

    static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 3..<bytes.count where bytes[index - 3] == 13 && bytes[index - 2] == 10 && bytes[index - 1] == 13 && bytes[index] == 10 {
            return index + 1
        }
        return nil
    }

    init?(head: [UInt8]) {
        let text = String(decoding: head, as: UTF8.self)
        var lines = text.split(separator: "\r\n").map(String.init)
        guard !lines.isEmpty else { return nil }
        let requestLine = lines.removeFirst().split(separator: " ").map(String.init)
        guard requestLine.count == 3, requestLine[2].hasPrefix("HTTP/1.") else { return nil }
        method = requestLine[0]
        version = requestLine[2]
        headers = lines.compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingSpaces())
        }
        var authority: Substring
        if method == "CONNECT" {
            authority = Substring(requestLine[1])
            path = ""
        } else {
            let target = requestLine[1]
            guard target.lowercased().hasPrefix("http://") else { return nil }
            let rest = target.dropFirst("http://".count)
            let slash = rest.firstIndex(of: "/") ?? rest.endIndex
            authority = rest[..<slash]
            path = slash == rest.endIndex ? "/" : String(rest[slash...])
        }
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }  // No userinfo.
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            portText = authority[authority.index(after: colon)...]
        } else {
            host = String(authority)
        }
        guard !host.isEmpty else { return nil }
        if let portText {
            guard let value = UInt16(portText), value > 0 else { return nil }
            port = value
        } else {
            guard method != "CONNECT" else { return nil }
            port = 80
        }
    }

    /// The head sent upstream for plain HTTP: origin-form target, no proxy headers, one request per connection.
    /// Each `replacements` placeholder found in a header value is replaced by its value; the names of those
    /// replaced come back with the head.
    func forwardedHead(replacing replacements: [(placeholder: String, value: String, name: String)] = []) -> (head: [UInt8], replaced: [String]) {
        var lines = ["\(method) \(path) \(version)"]
        var hasHost = false
        var replaced: [String] = []
        for header in headers {
            let name = header.name.lowercased()
            if name.hasPrefix("proxy-") || name == "connection" || name == "keep-alive" { continue }
            if name == "host" { hasHost = true }
            var value = header.value
            for replacement in replacements where value.contains(replacement.placeholder) {
                value = value.replacing(replacement.placeholder, with: replacement.value)
                if !replaced.contains(replacement.name) { replaced.append(replacement.name) }
            }
            lines.append("\(header.name): \(value)")
        }
        if !hasHost { lines.append("Host: \(host.contains(":") ? "[\(host)]" : host)\(port == 80 ? "" : ":\(port)")") }
        lines.append("Connection: close")
        return (Array((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8), replaced)
    }

    static func response(_ code: Int, _ body: String) -> [UInt8] {
        let reason = [400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"][code] ?? "Error"
        return Array("HTTP/1.1 \(code) \(reason)\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)".utf8)
    }
}

extension EgressProxy {
    /// The port on the sandbox's own 127.0.0.1 where a forwarder (process) or the guest agent (kvm) listens
    /// for the proxy, and the URL the command's environment names.
    public static let sandboxPort: UInt16 = 3128
    public static let sandboxURL = "http://127.0.0.1:\(sandboxPort)"

    /// A decision listener that writes a line for each refusal to `descriptor` (a sandbox's stderr).
    public static func logDenials(to descriptor: Int32) -> @Sendable (Record) -> Void {
        { record in
            guard !record.allowed else { return }
            try? HostSystem.writeAll(descriptor, Array("hyperctl: egress denied: \(record.host):\(record.port): \(record.reason ?? "refused")\n".utf8))
        }
    }

    /// The variables that point a command's HTTP clients at the proxy listening at `url` inside the sandbox;
    /// `NO_PROXY` keeps the sandbox's own loopback services direct.
    public static func clientEnvironment(url: String) -> [EnvironmentVariable] {
        ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"].map { EnvironmentVariable(name: $0, value: url) }
            + ["NO_PROXY", "no_proxy"].map { EnvironmentVariable(name: $0, value: "localhost,127.0.0.1,::1") }
    }
}

