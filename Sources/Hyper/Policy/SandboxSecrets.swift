/// A sandbox's secrets as read on the host at launch: each value, and what the sandbox sees of it.
///
/// A secret delivered as a file shows its value at `/run/secrets/NAME`. An injected secret shows only a
/// placeholder, there and in the command's `$NAME`; the egress proxy puts the value in place of the placeholder
/// in the headers of plain-HTTP requests to the secret's destinations. Values stay inside this module: other
/// modules see `visibleValue`, which for an injected secret is the placeholder.
public struct SandboxSecrets: Sendable {
    /// One secret.
    public struct Entry: Sendable {
        public let name: String
        /// The real value. For an injected secret it never enters the sandbox.
        let value: String
        /// Where the proxy injects it; empty for a secret delivered as a file.
        public let injectedInto: [NetworkDestination]
        /// For an injected secret, the text the sandbox sees instead of the value.
        public let placeholder: String?

        /// What the sandbox gets: the value for a file secret, the placeholder for an injected one.
        public var visibleValue: String { placeholder ?? value }
    }

    /// The largest value accepted.
    public static let maximumValueBytes = 1 << 20

    public let entries: [Entry]

    /// No secrets.
    public init() { entries = [] }

    init(entries: [Entry]) { self.entries = entries }

    /// Reads every secret of a validated spec. An error names the secret and its source, never the value.
    public static func read(_ spec: SandboxSpec) throws(HyperError) -> SandboxSecrets {
        guard !spec.secrets.isEmpty else { return SandboxSecrets() }
        let random = try HostRandom()
        var entries: [Entry] = []
        for secret in spec.secrets {
            let value = try readValue(secret)
            var placeholder: String?
            if secret.isInjected {
                // A value goes into HTTP header lines: one line of printable text.
                guard value.utf8.allSatisfy({ $0 == 9 || ($0 >= 0x20 && $0 != 0x7F) }), !value.isEmpty else {
                    throw HyperError(.invalidSpec, "secret \(secret.name): an injected value must be one non-empty line of printable text (it goes into HTTP headers)")
                }
                placeholder = "hyperctl-placeholder-\(secret.name)-" + (try random.hex(bytes: 16))
            }
            entries.append(Entry(name: secret.name, value: value, injectedInto: secret.injectedInto, placeholder: placeholder))
        }
        return SandboxSecrets(entries: entries)
    }

    static func readValue(_ secret: Secret) throws(HyperError) -> String {
        var bytes: [UInt8]
        switch secret.source {
        case let .file(path):
            guard let read = try? HostSystem.readFile(path, limit: maximumValueBytes) else {
                throw HyperError(.invalidSpec, "secret \(secret.name): cannot read \(path) (at most 1 MiB)")
            }
            bytes = read
        case let .environment(variable):
            guard let value = HostSystem.environmentValue(variable) else {
                throw HyperError(.invalidSpec, "secret \(secret.name): host environment variable \(variable) is not set")
            }
            bytes = Array(value.utf8)
        }
        guard !bytes.contains(0), let text = String(validating: bytes, as: UTF8.self) else {
            throw HyperError(.invalidSpec, "secret \(secret.name): the value must be UTF-8 text without NUL bytes")
        }
        return text
    }

    /// The command's environment additions: `NAME=placeholder` for each injected secret.
    public var placeholderEnvironment: [EnvironmentVariable] {
        entries.compactMap { entry in entry.placeholder.map { EnvironmentVariable(name: entry.name, value: $0) } }
    }

    /// The injected secrets bound to `host` at `port`.
    func injections(host: String, port: UInt16) -> [Entry] {
        entries.filter { entry in entry.placeholder != nil && entry.injectedInto.contains { $0.matches(host: host, port: port) } }
    }
}

