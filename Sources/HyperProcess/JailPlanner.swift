import Hyper

/// Turns a validated spec into a `JailConfig`: the new root's layout, the ids, the limits and the filter.
///
/// The root is a read-only tmpfs holding: the system directories of the host's `/` (or of the spec's
/// `rootfs` tree) read-only, a synthesized `/etc` with only what programs need (no shadow, sudoers
/// or keys), fresh `/proc`, `/dev` and `/tmp` (made by the helper), the workspace read-write at its own path,
/// and the spec's mounts.
public struct JailPlanner: Sendable {
    /// The process limit applied when the spec sets none, so a fork bomb cannot exhaust the host. It is an
    /// rlimit (counted per sandbox user), not a cgroup: moving a process into a v1 cgroup costs about 10 ms.
    public static let defaultPidsLimit = 4096

    /// Creates a planner.
    public init() {}

    /// Top-level system directories, bound read-only when they are directories and recreated when they are links.
    static let systemDirectories = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"]
    /// Parts of /etc taken from the system root read-only: the loader cache, certificates, alternatives, zone.
    static let etcEntries = ["ld.so.cache", "ssl", "ca-certificates", "alternatives", "localtime"]

    /// Where secrets are delivered as files inside the sandbox (`/run/secrets/NAME`).
    public static let secretsDirectory = "/run/secrets"

    /// Where the egress proxy's socket appears inside the sandbox.
    public static let egressSocketInside = "/run/hyperctl/egress.sock"

    /// Returns the helper configuration for a spec. With `egressSocket` (the host path of the egress proxy's
    /// socket), the socket is bound into the sandbox, the helper forwards `EgressProxy.sandboxURL` to it, and
    /// the command's environment names that proxy.
    /// Each of `secrets` becomes a read-only file in `/run/secrets` of the sandbox's read-only root (holding
    /// the placeholder for an injected secret, which also goes into the command's environment).
    public func plan(_ spec: SandboxSpec, facts: ProcessHostFacts, sandboxName: String, egressSocket: String? = nil,
                     secrets: SandboxSecrets = SandboxSecrets(), hostname: String? = nil) -> JailConfig {
        var config = JailConfig()
        if let hostname { config.hostname = hostname }
        config.argv = spec.command
        let proxyEnvironment = egressSocket == nil ? [] : EgressProxy.clientEnvironment(url: EgressProxy.sandboxURL)
        config.environment = spec.commandEnvironment(adding: proxyEnvironment + secrets.placeholderEnvironment)
        config.workingDirectory = spec.workingDirectory ?? spec.workspace
        config.forwardStdin = spec.interactive
        config.tty = spec.tty
        let base = spec.rootfs.map { $0 == "/" ? "" : $0 } ?? ""

        for name in Self.systemDirectories {
            let path = base + "/" + name
            if let target = HostSystem.symbolicLinkTarget(path) {
                config.symlinks.append((target: target, path: "/" + name))
            } else if HostSystem.fileKind(at: path) == .directory {
                config.binds.append(.init(source: path, destination: "/" + name, readOnly: true, idmapped: false, isFile: false))
            }
        }
        for name in Self.etcEntries {
            let path = base + "/etc/" + name
            if let target = HostSystem.symbolicLinkTarget(path), name == "localtime" {
                config.symlinks.append((target: target, path: "/etc/" + name))
            } else if let kind = HostSystem.fileKind(at: path), kind != .other {
                config.binds.append(.init(source: path, destination: "/etc/" + name, readOnly: true, idmapped: false,
                                          isFile: kind == .regularFile))
            }
        }

        let identity = sandboxIdentity(spec: spec, facts: facts)
        config.uid = identity.uid
        config.gid = identity.gid
        config.files = etcFiles(uid: identity.uid, gid: identity.gid, home: spec.workspace, hostname: config.hostname)

        config.binds.append(.init(source: spec.workspace, destination: spec.workspace, readOnly: false, idmapped: true, isFile: false))
        for mount in spec.mounts {
            config.binds.append(.init(source: mount.source, destination: mount.destination, readOnly: mount.readOnly,
                                      idmapped: true, isFile: HostSystem.fileKind(at: mount.source) == .regularFile))
        }
        if spec.protectsHostExecutedFiles {
            config.readOnlyPaths = ["/.git/hooks", "/.git/config"].map { spec.workspace + $0 }
                .filter { HostSystem.fileKind(at: $0) != nil && HostSystem.symbolicLinkTarget($0) == nil }
        }

        if let egressSocket {
            config.directories.append("/run/hyperctl")
            config.binds.append(.init(source: egressSocket, destination: Self.egressSocketInside, readOnly: false, idmapped: false, isFile: true))
            config.egressSocket = Self.egressSocketInside
        }

        if !secrets.entries.isEmpty {
            config.directories.append(Self.secretsDirectory)
            for secret in secrets.entries { config.files.append((path: Self.secretsDirectory + "/" + secret.name, content: secret.visibleValue)) }
        }

        config.cgroups = CgroupPlan.make(limits: spec.limits, facts: facts, name: sandboxName)
        config.resourceLimits = resourceLimits(spec.limits, unenforced: config.cgroups.unenforced)
        config.seccompProgram = SeccompFilter.program()
        config.timeoutMilliseconds = spec.limits.timeout.map { max(1, $0.nanoseconds / 1_000_000) }
        return config
    }

    /// The user the command runs as: as root, the workspace owner's id inside the sandbox's shifted range
    /// (so the idmapped workspace is its own); otherwise the caller's own ids.
    func sandboxIdentity(spec: SandboxSpec, facts: ProcessHostFacts) -> (uid: UInt32, gid: UInt32) {
        guard facts.isRoot else { return HostSystem.userIdentity }
        guard let owner = HostSystem.owner(of: spec.workspace), owner.uid < 65536, owner.gid < 65536 else { return (0, 0) }
        return owner
    }

    /// Rlimits: no core dumps ever (they could hold secrets), the default process cap, and fallbacks for
    /// limits that no cgroup controller enforces here.
    func resourceLimits(_ limits: ResourceLimits, unenforced: Set<SandboxFeature>) -> [(resource: Int32, value: UInt64)] {
        let core: Int32 = 4, addressSpace: Int32 = 9, processes: Int32 = 6
        var result: [(resource: Int32, value: UInt64)] = [(core, 0)]
        if unenforced.contains(.memoryLimit), let memory = limits.memoryBytes { result.append((addressSpace, memory)) }
        let pids = limits.pids.map { unenforced.contains(.pidsLimit) ? $0 : max($0, Self.defaultPidsLimit) } ?? Self.defaultPidsLimit
        result.append((processes, UInt64(pids)))
        return result
    }

    func etcFiles(uid: UInt32, gid: UInt32, home: String, hostname: String) -> [(path: String, content: String)] {
        var passwd = "root:x:0:0:root:/root:/bin/sh\n"
        var group = "root:x:0:\n"
        if uid != 0 { passwd += "sandbox:x:\(uid):\(gid):sandbox:\(home):/bin/sh\n" }
        if gid != 0 { group += "sandbox:x:\(gid):\n" }
        passwd += "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        group += "nogroup:x:65534:\n"
        return [
            ("/etc/passwd", passwd),
            ("/etc/group", group),
            ("/etc/hostname", hostname + "\n"),
            ("/etc/hosts", "127.0.0.1\tlocalhost \(hostname)\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
            ("/etc/resolv.conf", "# hyperctl: this sandbox has no network beyond its own loopback.\n"),
            ("/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n"),
        ]
    }
}
