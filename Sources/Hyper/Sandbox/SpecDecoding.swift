/// Strict decoding of a sandbox spec from JSON, and its JSON form.
///
/// The format (all keys optional; unknown keys are errors):
/// ```json
/// {
///   "command": ["make", "test"],
///   "env": {"CI": "1"},
///   "workdir": "/src/project",
///   "workspace": "/src/project",
///   "mounts": [{"source": "/data", "destination": "/data", "readOnly": true}, "/cache:/cache"],
///   "network": "none"  or  {"allow": ["pypi.org:443", "*.example.org"]},
///   "secrets": {"API_TOKEN": "env:API_TOKEN", "DEPLOY_KEY": "file:/run/keys/deploy"},
///   "limits": {"memory": "2G", "cpus": 2, "pids": 512, "timeout": "5m"},
///   "interactive": false,
///   "tty": false,
///   "rootfs": "/srv/roots/debian",
///   "docker": false,
///   "writableHooks": false
/// }
/// ```
/// Relative host paths are taken relative to `baseDirectory` (the spec file's folder).
extension SandboxSpec {
    /// The keys a spec file may contain.
    public static let topLevelKeys = ["command", "env", "workdir", "workspace", "mounts", "network", "secrets", "limits", "interactive", "tty", "rootfs", "docker", "writableHooks"]

    /// Decodes a spec from JSON text.
    ///
    /// - Parameters:
    ///   - text: the JSON document.
    ///   - baseDirectory: the absolute directory that relative host paths are resolved against.
    /// - Throws: `HyperError.invalidSpec` naming the field and the value that is wrong.
    public static func decode(json text: String, baseDirectory: String) throws(HyperError) -> SandboxSpec {
        let document: JSONValue
        do {
            document = try JSONValue.parse(text)
        } catch {
            throw HyperError(.invalidSpec, "spec: invalid JSON at \(error)")
        }
        return try decode(document, baseDirectory: baseDirectory)
    }

    /// Decodes a spec from a parsed JSON document.
    public static func decode(_ document: JSONValue, baseDirectory: String) throws(HyperError) -> SandboxSpec {
        let members = try SpecField("spec").object(document, allowedKeys: topLevelKeys)
        var spec = SandboxSpec()
        for (key, value) in members {
            let field = SpecField(key)
            switch key {
            case "command":
                spec.command = try field.stringArray(value)
            case "env":
                for (name, entry) in try field.object(value, allowedKeys: nil) {
                    try EnvironmentVariable.validateName(name, field: "env")
                    spec.setEnvironment(EnvironmentVariable(name: name, value: try field.child(name).string(entry)))
                }
            case "workdir":
                spec.workingDirectory = try field.string(value)
            case "workspace":
                spec.workspace = absolute(try field.string(value), base: baseDirectory)
            case "mounts":
                spec.mounts = try decodeMounts(value, field: field, baseDirectory: baseDirectory)
            case "network":
                spec.network = try decodeNetwork(value, field: field)
            case "secrets":
                for (name, entry) in try field.object(value, allowedKeys: nil) {
                    var secret = try Secret.parse("\(name)=\(try field.child(name).string(entry))")
                    if case let .file(path) = secret.source { secret.source = .file(absolute(path, base: baseDirectory)) }
                    spec.secrets.append(secret)
                }
            case "limits":
                spec.limits = try decodeLimits(value, field: field)
            case "interactive":
                spec.interactive = try field.bool(value)
            case "tty":
                spec.tty = try field.bool(value)
            case "rootfs":
                spec.rootfs = absolute(try field.string(value), base: baseDirectory)
            case "docker":
                spec.docker = try field.bool(value)
            case "writableHooks":
                spec.protectsHostExecutedFiles = !(try field.bool(value))
            default:
                break // Unreachable: `object(_:allowedKeys:)` rejected other keys.
            }
        }
        return spec
    }

    private static func decodeMounts(_ value: JSONValue, field: SpecField, baseDirectory: String) throws(HyperError) -> [Mount] {
        guard case let .array(items) = value else { throw field.typeError(value, expected: "an array") }
        var mounts: [Mount] = []
        for (index, item) in items.enumerated() {
            let itemField = field.index(index)
            var mount: Mount
            switch item {
            case let .string(text):
                do { mount = try Mount.parse(text) } catch { throw itemField.error(error.message) }
            case .object:
                let members = try itemField.object(item, allowedKeys: ["source", "destination", "readOnly"])
                guard let source = item["source"], let destination = item["destination"] else {
                    throw itemField.error("needs both \"source\" and \"destination\"")
                }
                mount = Mount(
                    source: try itemField.child("source").string(source),
                    destination: try itemField.child("destination").string(destination),
                    readOnly: try members.first { $0.0 == "readOnly" }.map { m throws(HyperError) in try itemField.child("readOnly").bool(m.1) } ?? false)
            default:
                throw itemField.typeError(item, expected: "an object or a \"SRC:DST[:ro]\" string")
            }
            mount.source = absolute(mount.source, base: baseDirectory)
            mounts.append(mount)
        }
        return mounts
    }

    private static func decodeNetwork(_ value: JSONValue, field: SpecField) throws(HyperError) -> NetworkPolicy {
        switch value {
        case .string("none"):
            return .none
        case .object:
            _ = try field.object(value, allowedKeys: ["allow"])
            guard let list = value["allow"] else { throw field.error("needs an \"allow\" list") }
            var destinations: [NetworkDestination] = []
            for (index, entry) in try field.child("allow").stringArray(list).enumerated() {
                do { destinations.append(try NetworkDestination.parse(entry)) } catch {
                    throw field.child("allow").index(index).error(error.message)
                }
            }
            return .allow(destinations)
        default:
            throw field.typeError(value, expected: "\"none\" or {\"allow\": [...]}")
        }
    }

    private static func decodeLimits(_ value: JSONValue, field: SpecField) throws(HyperError) -> ResourceLimits {
        var limits = ResourceLimits()
        for (key, entry) in try field.object(value, allowedKeys: ["memory", "cpus", "pids", "timeout"]) {
            let name = "limits.\(key)"
            switch (key, entry) {
            case let ("memory", .string(text)):
                limits.memoryBytes = try ResourceLimits.parseMemory(text, field: name)
            case let ("memory", .number(number)):
                guard number == number.rounded(), number >= 0, number < 1e18 else {
                    throw HyperError(.invalidSpec, "\(name): \(JSONValue.number(number).compactText) is not a whole number of bytes")
                }
                limits.memoryBytes = try ResourceLimits.parseMemory(String(UInt64(number)), field: name)
            case let ("cpus", .number(number)):
                limits.cpus = try ResourceLimits.checkCPUs(number, field: name, shown: JSONValue.number(number).compactText)
            case let ("cpus", .string(text)):
                limits.cpus = try ResourceLimits.parseCPUs(text, field: name)
            case let ("pids", .number(number)):
                guard number == number.rounded(), abs(number) < 1e12 else {
                    throw HyperError(.invalidSpec, "\(name): \(JSONValue.number(number).compactText) is not a whole number of processes")
                }
                limits.pids = try ResourceLimits.checkPids(Int(number), field: name)
            case let ("timeout", .string(text)):
                limits.timeout = try ResourceLimits.parseTimeout(text, field: name)
            case ("memory", _):
                throw SpecField(name).typeError(entry, expected: "a size string such as \"64M\" or a number of bytes")
            case ("timeout", _):
                throw SpecField(name).typeError(entry, expected: "a duration string such as \"30s\"")
            default:
                throw SpecField(name).typeError(entry, expected: "a number")
            }
        }
        return limits
    }

    /// The whole spec as a document that `decode` reads back to the same spec (environment values and
    /// secret sources included: unlike `summary`, it is not for reports).
    public var document: JSONValue {
        var members: [(String, JSONValue)] = [("command", .array(command.map(JSONValue.string)))]
        members.append(("env", .object(environment.map { ($0.name, .string($0.value)) })))
        if let workingDirectory { members.append(("workdir", .string(workingDirectory))) }
        members.append(("workspace", .string(workspace)))
        members.append(("mounts", .array(mounts.map { mount in
            .object([("source", .string(mount.source)), ("destination", .string(mount.destination)), ("readOnly", .bool(mount.readOnly))])
        })))
        switch network {
        case .none: members.append(("network", .string("none")))
        case let .allow(list): members.append(("network", .object([("allow", .array(list.map { .string($0.description) }))])))
        }
        members.append(("secrets", .object(secrets.map { secret in
            var source: String
            switch secret.source {
            case let .file(path): source = "file:" + path
            case let .environment(variable): source = "env:" + variable
            }
            if secret.isInjected { source += "@" + secret.injectedInto.map(\.description).joined(separator: ",") }
            return (secret.name, .string(source))
        })))
        var limitMembers: [(String, JSONValue)] = []
        if let memory = limits.memoryBytes { limitMembers.append(("memory", .string(String(memory)))) }
        if let cpus = limits.cpus { limitMembers.append(("cpus", .number(cpus))) }
        if let pids = limits.pids { limitMembers.append(("pids", .integer(pids))) }
        if let timeout = limits.timeout { limitMembers.append(("timeout", .string("\(max(1, timeout.nanoseconds / 1_000_000))ms"))) }
        members.append(("limits", .object(limitMembers)))
        members.append(("interactive", .bool(interactive)))
        members.append(("tty", .bool(tty)))
        if let rootfs { members.append(("rootfs", .string(rootfs))) }
        if docker { members.append(("docker", .bool(true))) }
        members.append(("writableHooks", .bool(!protectsHostExecutedFiles)))
        return .object(members)
    }

    /// Returns `path` made absolute against `base` (paths starting with `/` are kept).
    public static func absolute(_ path: String, base: String) -> String {
        if path.hasPrefix("/") || path.isEmpty { return path }
        let trimmedBase = base.hasSuffix("/") ? String(base.dropLast()) : base
        return path == "." ? trimmedBase : trimmedBase + "/" + path
    }
}

/// A field path inside a spec document (`limits.memory`, `mounts[2].source`) used to word errors.
struct SpecField {
    let path: String

    init(_ path: String) { self.path = path }

    func child(_ key: String) -> SpecField { SpecField(path == "spec" ? key : "\(path).\(key)") }
    func index(_ position: Int) -> SpecField { SpecField("\(path)[\(position)]") }

    func error(_ message: String) -> HyperError { HyperError(.invalidSpec, "\(path): \(message)") }

    func typeError(_ value: JSONValue, expected: String) -> HyperError {
        let shown = value.compactText
        let excerpt = shown.count > 40 ? String(shown.prefix(37)) + "..." : shown
        return error("expected \(expected), got \(value.typeName) \(excerpt)")
    }

    func object(_ value: JSONValue, allowedKeys: [String]?) throws(HyperError) -> [(String, JSONValue)] {
        guard case let .object(members) = value else { throw typeError(value, expected: "an object") }
        if let allowedKeys, let unknown = members.first(where: { !allowedKeys.contains($0.0) }) {
            throw HyperError(.invalidSpec, "\(child(unknown.0).path): unknown key (known keys: \(allowedKeys.joined(separator: ", ")))")
        }
        return members
    }

    func string(_ value: JSONValue) throws(HyperError) -> String {
        guard case let .string(text) = value else { throw typeError(value, expected: "a string") }
        return text
    }

    func bool(_ value: JSONValue) throws(HyperError) -> Bool {
        guard case let .bool(flag) = value else { throw typeError(value, expected: "true or false") }
        return flag
    }

    func stringArray(_ value: JSONValue) throws(HyperError) -> [String] {
        guard case let .array(items) = value else { throw typeError(value, expected: "an array of strings") }
        var strings: [String] = []
        for (position, item) in items.enumerated() { strings.append(try index(position).string(item)) }
        return strings
    }
}
