/// Host checks of a spec before launch, and the summary of a spec that reports may show.
extension SandboxSpec {
    /// Returns the spec with host paths canonicalized, after checking everything that can be checked before launch.
    ///
    /// It checks that there is a command, that the workspace and mount sources exist, that paths inside the
    /// sandbox are absolute and clean, and that every secret's source can be read. It never reads a secret's
    /// value into the spec.
    /// - Throws: `HyperError.invalidSpec` naming the field and the value.
    /// - Parameter requiringCommand: false for a session sandbox, whose commands come later.
    public func validated(requiringCommand: Bool = true) throws(HyperError) -> SandboxSpec {
        var spec = self
        if requiringCommand || !command.isEmpty {
            guard let program = command.first else {
                throw HyperError(.invalidSpec, "command: empty; give the command after -- or as the spec's \"command\"")
            }
            guard !program.isEmpty else { throw HyperError(.invalidSpec, "command: the program name is empty") }
        }
        if let bad = command.first(where: { $0.utf8.contains(0) }) {
            throw HyperError(.invalidSpec, "command: argument \"\(bad)\" contains a NUL byte")
        }
        spec.workspace = try Self.existingDirectory(workspace, field: "workspace")
        guard spec.workspace != "/" else {
            throw HyperError(.invalidSpec, "workspace: / is the whole host file system; run hyperctl from a project folder, or pass --workspace DIR")
        }
        if let workingDirectory {
            try Self.checkSandboxPath(workingDirectory, field: "workdir")
        }
        var destinations: Set<String> = [spec.workspace]
        for (index, mount) in mounts.enumerated() {
            let field = "mounts[\(index)]"
            guard HostSystem.fileKind(at: mount.source) != nil else {
                throw HyperError(.invalidSpec, "\(field).source: \(mount.source) does not exist")
            }
            do {
                spec.mounts[index].source = try HostSystem.realPath(mount.source)
            } catch {
                throw HyperError(.invalidSpec, "\(field).source: \(error)")
            }
            try Self.checkSandboxPath(mount.destination, field: "\(field).destination")
            guard mount.destination != "/" else {
                throw HyperError(.invalidSpec, "\(field).destination: mounting over / is not allowed")
            }
            let normalized = Self.normalize(mount.destination)
            guard destinations.insert(normalized).inserted else {
                throw HyperError(.invalidSpec, "\(field).destination: \(mount.destination) is already mounted")
            }
            spec.mounts[index].destination = normalized
        }
        var secretNames: Set<String> = []
        for secret in secrets {
            guard secretNames.insert(secret.name).inserted else {
                throw HyperError(.invalidSpec, "secret \(secret.name): declared twice")
            }
            switch secret.source {
            case let .file(path):
                guard HostSystem.fileKind(at: path) == .regularFile, HostSystem.isReadable(path) else {
                    throw HyperError(.invalidSpec, "secret \(secret.name): file \(path) does not exist or is not readable")
                }
            case let .environment(variable):
                guard HostSystem.environmentValue(variable) != nil else {
                    throw HyperError(.invalidSpec, "secret \(secret.name): host environment variable \(variable) is not set")
                }
            }
        }
        if let rootfs {
            spec.rootfs = try Self.existingDirectory(rootfs, field: "rootfs")
            guard HostSystem.fileKind(at: (spec.rootfs ?? rootfs) + "/usr") == .directory
                    || HostSystem.fileKind(at: (spec.rootfs ?? rootfs) + "/bin") == .directory else {
                throw HyperError(.invalidSpec, "rootfs: \(rootfs) has neither usr/ nor bin/; it does not look like a root tree")
            }
        }
        if case let .allow(list) = network, list.isEmpty {
            throw HyperError(.invalidSpec, "network: the allowlist is empty; use none to have no network")
        }
        for secret in secrets where secret.isInjected {
            guard case let .allow(list) = network else {
                throw HyperError(.invalidSpec, "secret \(secret.name): it is injected by the egress proxy, which needs a network allowlist (--net allow:...)")
            }
            for destination in secret.injectedInto where !list.contains(where: { $0.overlaps(destination) }) {
                throw HyperError(.invalidSpec, "secret \(secret.name): the injection destination \(destination) is not on the network allowlist")
            }
        }
        return spec
    }

    /// Returns the canonical path of an existing directory, or throws naming the field.
    static func existingDirectory(_ path: String, field: String) throws(HyperError) -> String {
        guard !path.isEmpty else { throw HyperError(.invalidSpec, "\(field): no directory given") }
        switch HostSystem.fileKind(at: path) {
        case nil: throw HyperError(.invalidSpec, "\(field): \(path) does not exist")
        case .regularFile?, .other?: throw HyperError(.invalidSpec, "\(field): \(path) is not a directory")
        case .directory?: break
        }
        do {
            return try HostSystem.realPath(path)
        } catch {
            throw HyperError(.invalidSpec, "\(field): \(error)")
        }
    }

    /// Checks that a path inside the sandbox is absolute and has no `..` components.
    static func checkSandboxPath(_ path: String, field: String) throws(HyperError) {
        guard path.hasPrefix("/") else { throw HyperError(.invalidSpec, "\(field): \(path) must be an absolute path") }
        guard !path.split(separator: "/").contains("..") else {
            throw HyperError(.invalidSpec, "\(field): \(path) must not contain '..'")
        }
        guard !path.utf8.contains(0) else { throw HyperError(.invalidSpec, "\(field): the path contains a NUL byte") }
    }

    /// Returns an absolute path without empty or `.` components.
    static func normalize(_ path: String) -> String {
        "/" + path.split(separator: "/").filter { $0 != "." }.joined(separator: "/")
    }

    /// The spec as a report may show it: no environment values and no secret values or sources' contents.
    public var summary: JSONValue {
        var members: [(String, JSONValue)] = [
            ("command", .array(command.map(JSONValue.string))),
            ("environmentNames", .array(environment.map { .string($0.name) })),
            ("workspace", .string(workspace)),
        ]
        if let workingDirectory { members.append(("workdir", .string(workingDirectory))) }
        members.append(("mounts", .array(mounts.map { mount in
            .object([("source", .string(mount.source)), ("destination", .string(mount.destination)), ("readOnly", .bool(mount.readOnly))])
        })))
        switch network {
        case .none: members.append(("network", .string("none")))
        case let .allow(list): members.append(("network", .object([("allow", .array(list.map { .string($0.description) }))])))
        }
        members.append(("secretNames", .array(secrets.map { .string($0.name) })))
        let injected = secrets.filter(\.isInjected)
        if !injected.isEmpty {
            members.append(("injectedSecrets", .object(injected.map { ($0.name, .array($0.injectedInto.map { .string($0.description) })) })))
        }
        var limitMembers: [(String, JSONValue)] = []
        if let memory = limits.memoryBytes { limitMembers.append(("memory", .string(Units.formatSize(memory)))) }
        if let cpus = limits.cpus { limitMembers.append(("cpus", .number(cpus))) }
        if let pids = limits.pids { limitMembers.append(("pids", .integer(pids))) }
        if let timeout = limits.timeout { limitMembers.append(("timeout", .string(Units.formatDuration(timeout)))) }
        members.append(("limits", .object(limitMembers)))
        members.append(("interactive", .bool(interactive)))
        members.append(("tty", .bool(tty)))
        if let rootfs { members.append(("rootfs", .string(rootfs))) }
        if docker { members.append(("docker", .bool(true))) }
        if !protectsHostExecutedFiles { members.append(("writableHooks", .bool(true))) }
        return .object(members)
    }
}
