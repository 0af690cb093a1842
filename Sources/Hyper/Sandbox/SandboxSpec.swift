/// Everything a sandbox is allowed to do, fixed before it starts: what runs, and under which policy.
///
/// A spec is a plain value. It comes from a JSON file (`SandboxSpec.decode(json:)`), from flags, or both
/// (flags override the file). `validated()` checks it against the host before a backend sees it.
public struct SandboxSpec: Equatable, Sendable {
    /// The command and its arguments; `command[0]` is the program.
    public var command: [String] = []
    /// The command's environment. Empty by default: nothing of the host's environment leaks in.
    public var environment: [EnvironmentVariable] = []
    /// The working directory inside the sandbox; the workspace when nil.
    public var workingDirectory: String?
    /// The host directory mounted read-write, at the same absolute path inside the sandbox.
    public var workspace: String = ""
    /// Extra bind mounts.
    public var mounts: [Mount] = []
    /// Which network destinations the sandbox may reach.
    public var network: NetworkPolicy = .none
    /// Secrets the sandbox may use, each with the host source of its value.
    public var secrets: [Secret] = []
    /// Resource limits.
    public var limits = ResourceLimits()
    /// Whether stdin is forwarded to the command.
    public var interactive = false
    /// Whether the command gets a terminal.
    public var tty = false
    /// A prepared root tree whose system directories replace the host's (`/usr`, `/bin`, `/lib`...); nil for the host's.
    public var rootfs: String?
    /// Whether the sandbox has a private Docker daemon (microVM backends only: it needs a VM boundary).
    public var docker = false
    /// Whether files in the workspace that the host runs later on its own (`.git/hooks`, `.git/config`) are
    /// read-only inside. On by default; turning it off lets the command plant code the host will run.
    public var protectsHostExecutedFiles = true

    /// Creates an empty spec; set the command and workspace before launching it.
    public init() {}

    /// Sets an environment variable, replacing an earlier value of the same name.
    public mutating func setEnvironment(_ variable: EnvironmentVariable) {
        if let index = environment.firstIndex(where: { $0.name == variable.name }) {
            environment[index] = variable
        } else {
            environment.append(variable)
        }
    }
}

/// One `NAME=value` entry of the sandbox's environment.
public struct EnvironmentVariable: Equatable, Sendable {
    public var name: String
    public var value: String

    /// Creates a variable.
    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }

    /// Parses `NAME=value`; the name must be a shell-style identifier.
    public static func parse(_ text: String) throws(HyperError) -> EnvironmentVariable {
        guard let equals = text.firstIndex(of: "=") else {
            throw HyperError(.invalidSpec, "env: \"\(text)\" is not NAME=VALUE")
        }
        let name = String(text[..<equals])
        try validateName(name, field: "env")
        return EnvironmentVariable(name: name, value: String(text[text.index(after: equals)...]))
    }

    /// Checks that `name` is a valid environment variable name.
    static func validateName(_ name: String, field: String) throws(HyperError) {
        let valid = !name.isEmpty && name.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || byte == 0x5F
        } && !(name.utf8.first.map { $0 >= 0x30 && $0 <= 0x39 } ?? true)
        guard valid else {
            throw HyperError(.invalidSpec, "\(field): \"\(name)\" is not a valid variable name (letters, digits and _, not starting with a digit)")
        }
    }
}

/// A bind mount from a host path to a path inside the sandbox.
public struct Mount: Equatable, Sendable {
    public var source: String
    public var destination: String
    public var readOnly: Bool

    /// Creates a mount.
    public init(source: String, destination: String, readOnly: Bool = false) {
        self.source = source
        self.destination = destination
        self.readOnly = readOnly
    }

    /// Parses `SRC:DST` or `SRC:DST:ro` (also `:rw`).
    public static func parse(_ text: String) throws(HyperError) -> Mount {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 || parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw HyperError(.invalidSpec, "mount: \"\(text)\" is not SRC:DST or SRC:DST:ro")
        }
        var readOnly = false
        if parts.count == 3 {
            switch parts[2] {
            case "ro": readOnly = true
            case "rw": readOnly = false
            default: throw HyperError(.invalidSpec, "mount: \"\(text)\" has option \"\(parts[2])\"; expected ro or rw")
            }
        }
        return Mount(source: parts[0], destination: parts[1], readOnly: readOnly)
    }
}

/// The network a sandbox may reach.
public enum NetworkPolicy: Equatable, Sendable {
    /// No network at all: only the sandbox's own loopback.
    case none
    /// Only these destinations, through the host's policy proxy.
    case allow([NetworkDestination])

    /// Parses `none` or `allow:HOST[:PORT],...`.
    public static func parse(_ text: String) throws(HyperError) -> NetworkPolicy {
        if text == "none" { return .none }
        guard text.hasPrefix("allow:") else {
            throw HyperError(.invalidSpec, "net: \"\(text)\" is not none or allow:HOST[:PORT],...")
        }
        let list = text.dropFirst("allow:".count).split(separator: ",", omittingEmptySubsequences: false)
        var destinations: [NetworkDestination] = []
        for item in list {
            destinations.append(try NetworkDestination.parse(String(item)))
        }
        return .allow(destinations)
    }
}

/// A host (name, wildcard `*.example.org`, or IP address) and an optional port on the network allowlist.
public struct NetworkDestination: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: UInt16?

    /// Creates a destination.
    public init(host: String, port: UInt16? = nil) {
        self.host = host
        self.port = port
    }

    public var description: String {
        let shownHost = host.contains(":") ? "[\(host)]" : host
        return port.map { "\(shownHost):\($0)" } ?? shownHost
    }

    /// Whether `host` (a name or an IP literal, without brackets) at `port` is this destination: the same name,
    /// a name under this `*.domain` wildcard, or the same address; and this port, when it names one.
    public func matches(host: String, port: UInt16) -> Bool {
        if let own = self.port, own != port { return false }
        let name = host.lowercased()
        if let address = IPAddress(name), let listed = IPAddress(self.host) { return address.unmapped == listed.unmapped }
        if self.host.hasPrefix("*.") { return name.hasSuffix(self.host.dropFirst()) && name.count > self.host.count - 1 }
        return self.host == name
    }

    /// Whether some host and port could match both this destination and `other`.
    public func overlaps(_ other: NetworkDestination) -> Bool {
        if let port, let otherPort = other.port, port != otherPort { return false }
        if host == other.host { return true }
        if let address = IPAddress(host), let otherAddress = IPAddress(other.host) { return address.unmapped == otherAddress.unmapped }
        func covers(_ wildcard: String, _ name: String) -> Bool {
            guard wildcard.hasPrefix("*.") else { return false }
            let suffix = wildcard.dropFirst()  // ".example.org"
            return name.hasPrefix("*.") ? name.dropFirst().hasSuffix(suffix) : name.hasSuffix(suffix) && name.count > suffix.count
        }
        return covers(host, other.host) || covers(other.host, host)
    }

    /// Parses `host`, `host:port`, `*.domain`, `[ipv6]` or `[ipv6]:port`.
    public static func parse(_ text: String) throws(HyperError) -> NetworkDestination {
        func invalid(_ why: String) -> HyperError {
            HyperError(.invalidSpec, "net: destination \"\(text)\" \(why)")
        }
        var host = text
        var portText: String?
        let bracketed = text.hasPrefix("[")
        if bracketed {
            guard let close = text.firstIndex(of: "]") else { throw invalid("has an unclosed '['") }
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { throw invalid("has text after ']' that is not :PORT") }
                portText = String(rest.dropFirst())
            }
        } else if let colon = text.lastIndex(of: ":") {
            host = String(text[..<colon])
            portText = String(text[text.index(after: colon)...])
            if host.contains(":") { throw invalid("is an IPv6 address without brackets; write [ADDR]:PORT") }
        }
        guard !host.isEmpty else { throw invalid("has no host") }
        if bracketed {
            let isAddress = host.contains(":") && host.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
            guard isAddress else { throw invalid("has an invalid IPv6 address") }
        } else {
            let labels = host.split(separator: ".", omittingEmptySubsequences: false)
            for (index, label) in labels.enumerated() {
                if label == "*" && index == 0 && labels.count > 1 { continue }
                let isLabel = !label.isEmpty && !label.hasPrefix("-")
                    && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
                guard isLabel else {
                    throw invalid("has an invalid host name (letters, digits, '-' and '.'; a wildcard only as a leading '*.')")
                }
            }
        }
        var port: UInt16?
        if let portText {
            guard let value = UInt16(portText), value > 0 else { throw invalid("has an invalid port \"\(portText)\" (1-65535)") }
            port = value
        }
        return NetworkDestination(host: host.lowercased(), port: port)
    }
}

extension SandboxSpec {
    /// The command's environment as `NAME=VALUE` entries: the spec's variables, each replaced by an entry of
    /// `additions` of the same name, then `additions`.
    public func commandEnvironment(adding additions: [EnvironmentVariable]) -> [String] {
        (environment.filter { variable in !additions.contains { $0.name == variable.name } } + additions).map { "\($0.name)=\($0.value)" }
    }
}

/// A secret the sandbox may use: a name, and where the host reads its value. Never a literal value.
///
/// A secret is either delivered as a file (`/run/secrets/NAME`, the value visible to the command) or, when it
/// is bound to destinations (`NAME=env:VAR@api.example.com`), injected by the egress proxy: the sandbox sees
/// only a placeholder, which the proxy replaces with the value in requests to those destinations.
public struct Secret: Equatable, Sendable {
    /// Where the host reads a secret's value from.
    public enum Source: Equatable, Sendable {
        /// A file on the host.
        case file(String)
        /// A variable in hyperctl's own environment.
        case environment(String)
    }

    public var name: String
    public var source: Source
    /// The destinations the proxy injects the value into; empty for a secret delivered as a file.
    public var injectedInto: [NetworkDestination]

    /// Whether the proxy injects the value (the sandbox sees a placeholder).
    public var isInjected: Bool { !injectedInto.isEmpty }

    /// Creates a secret declaration.
    public init(name: String, source: Source, injectedInto: [NetworkDestination] = []) {
        self.name = name
        self.source = source
        self.injectedInto = injectedInto
    }

    static let syntax = "NAME=file:PATH or NAME=env:VAR, optionally followed by @HOST[:PORT][,HOST[:PORT]...] for proxy injection"

    /// Parses `NAME=file:PATH` or `NAME=env:VAR`, each optionally followed by `@HOST[:PORT][,HOST[:PORT]...]`
    /// (the destinations the proxy injects the value into). A file path may hold `@` only when a binding follows.
    public static func parse(_ text: String) throws(HyperError) -> Secret {
        guard let equals = text.firstIndex(of: "=") else {
            throw HyperError(.invalidSpec, "secret: \"\(text)\" is not \(syntax)")
        }
        let name = String(text[..<equals])
        try EnvironmentVariable.validateName(name, field: "secret")
        var sourceText = text[text.index(after: equals)...]
        var destinations: [NetworkDestination] = []
        if let at = sourceText.lastIndex(of: "@"), !sourceText[at...].contains("/") {
            let list = sourceText[sourceText.index(after: at)...]
            sourceText = sourceText[..<at]
            for item in list.split(separator: ",", omittingEmptySubsequences: false) {
                do {
                    destinations.append(try NetworkDestination.parse(String(item)))
                } catch {
                    throw HyperError(.invalidSpec, "secret \(name): the injection destination \"\(item)\" is invalid: \(error.message)")
                }
            }
        }
        if sourceText.hasPrefix("file:"), sourceText.count > 5 {
            return Secret(name: name, source: .file(String(sourceText.dropFirst(5))), injectedInto: destinations)
        }
        if sourceText.hasPrefix("env:"), sourceText.count > 4 {
            let variable = String(sourceText.dropFirst(4))
            try EnvironmentVariable.validateName(variable, field: "secret \(name)")
            return Secret(name: name, source: .environment(variable), injectedInto: destinations)
        }
        throw HyperError(
            .invalidSpec,
            "secret \(name): the value source must be file:PATH or env:VAR; literal values are not accepted on the command line")
    }
}

/// Resource limits. A nil field means the backend's default.
public struct ResourceLimits: Equatable, Sendable {
    /// Memory in bytes.
    public var memoryBytes: UInt64?
    /// CPUs (may be fractional for cgroup quotas; VMs round up to whole vCPUs).
    public var cpus: Double?
    /// The maximum number of processes and threads.
    public var pids: Int?
    /// The wall-clock limit; the sandbox is killed and the run exits 124 when it passes.
    public var timeout: Duration?

    /// Creates limits with no field set.
    public init(memoryBytes: UInt64? = nil, cpus: Double? = nil, pids: Int? = nil, timeout: Duration? = nil) {
        self.memoryBytes = memoryBytes
        self.cpus = cpus
        self.pids = pids
        self.timeout = timeout
    }

    /// Parses a memory size, naming the field in the error.
    public static func parseMemory(_ text: String, field: String = "memory") throws(HyperError) -> UInt64 {
        guard let bytes = Units.parseSize(text) else {
            throw HyperError(.invalidSpec, "\(field): \"\(text)\" is not a size (examples: 64M, 2G, 1048576)")
        }
        guard bytes >= 4 << 20 else {
            throw HyperError(.invalidSpec, "\(field): \"\(text)\" is below the 4M minimum")
        }
        return bytes
    }

    /// Parses a CPU count, naming the field in the error.
    public static func parseCPUs(_ text: String, field: String = "cpus") throws(HyperError) -> Double {
        guard let value = Double(text), value.isFinite else {
            throw HyperError(.invalidSpec, "\(field): \"\(text)\" is not a number of CPUs (examples: 1, 2, 0.5)")
        }
        return try checkCPUs(value, field: field, shown: text)
    }

    static func checkCPUs(_ value: Double, field: String, shown: String) throws(HyperError) -> Double {
        guard value >= 0.01, value <= 1024 else {
            throw HyperError(.invalidSpec, "\(field): \(shown) is out of range (0.01 to 1024)")
        }
        return value
    }

    /// Parses a process count, naming the field in the error.
    public static func parsePids(_ text: String, field: String = "pids") throws(HyperError) -> Int {
        guard let value = Int(text) else {
            throw HyperError(.invalidSpec, "\(field): \"\(text)\" is not a whole number of processes")
        }
        return try checkPids(value, field: field)
    }

    static func checkPids(_ value: Int, field: String) throws(HyperError) -> Int {
        guard value >= 1, value <= 4_194_304 else {
            throw HyperError(.invalidSpec, "\(field): \(value) is out of range (1 to 4194304)")
        }
        return value
    }

    /// Parses a timeout, naming the field in the error.
    public static func parseTimeout(_ text: String, field: String = "timeout") throws(HyperError) -> Duration {
        guard let duration = Units.parseDuration(text) else {
            throw HyperError(.invalidSpec, "\(field): \"\(text)\" is not a positive duration (examples: 500ms, 30s, 5m)")
        }
        return duration
    }
}
