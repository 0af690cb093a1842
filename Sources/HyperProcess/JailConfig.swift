import Hyper

/// Everything the `hyper-jail` helper needs to build one sandbox, as plain values.
///
/// Swift decides the whole plan (mounts, files, ids, limits, the seccomp program); the helper only carries it
/// out between fork and exec. `encoded()` gives the records the helper reads from its fd 3: a 32-bit tag, a
/// 32-bit length and the bytes, with multi-part values separated by NUL.
public struct JailConfig: Equatable, Sendable {
    /// Record tags; `Sources/CHyperJail/jail.c` uses the same numbers.
    enum Tag: UInt32 {
        case argument = 1, environment, workingDirectory, bind, readOnlyPath, seccomp, timeoutMilliseconds
        case cgroupDirectory, cgroupWrite, cgroupProcs, resourceLimit, hostname, forwardStdin, file, symlink
        case uid, gid, cgroupKill, idBase, directory, tty, egressSocket, session, joinPid, egressPort
    }

    /// A bind mount of a host path into the sandbox.
    public struct Bind: Equatable, Sendable {
        public var source: String
        public var destination: String
        public var readOnly: Bool
        /// Whether ownership is shifted into the sandbox's id range (when the helper runs as root).
        public var idmapped: Bool
        /// Whether the source is a file rather than a directory.
        public var isFile: Bool
    }

    public var argv: [String] = []
    public var environment: [String] = []
    public var workingDirectory = "/"
    public var binds: [Bind] = []
    /// Paths inside the sandbox that are made read-only after the binds (repository hooks and config).
    public var readOnlyPaths: [String] = []
    /// Directories to create in the new root.
    public var directories: [String] = []
    /// Files to create in the new root, with their contents.
    public var files: [(path: String, content: String)] = []
    /// Symbolic links to create in the new root.
    public var symlinks: [(target: String, path: String)] = []
    public var seccompProgram: [BPFInstruction] = []
    public var timeoutMilliseconds: Int64?
    public var cgroups = CgroupPlan()
    /// `setrlimit` resources and values applied inside.
    public var resourceLimits: [(resource: Int32, value: UInt64)] = []
    public var hostname = LaunchOptions.defaultHostname
    public var forwardStdin = false
    /// Whether the command gets a terminal of the sandbox's own devpts, relayed to the host streams.
    public var tty = false
    /// The egress proxy's socket inside the sandbox: the helper then forwards 127.0.0.1:`egressPort` to it.
    public var egressSocket: String?
    public var egressPort: UInt16 = EgressProxy.sandboxPort
    /// A session sandbox: init runs no command and keeps the namespaces alive for commands joined later.
    public var session = false
    /// Join mode: the host pid of a running session's init, whose sandbox the command enters.
    public var joinPid: Int32?
    /// The user and group the command runs as, inside the sandbox.
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0
    /// The first host id of the sandbox's 65536-id range when the helper runs as root.
    public var idBase: UInt32 = JailConfig.defaultIDBase

    /// Sandbox id N is host id `defaultIDBase + N` when hyperctl runs as root; far above real users and
    /// the usual subordinate-id ranges.
    public static let defaultIDBase: UInt32 = 1_879_048_192

    /// Creates an empty configuration.
    public init() {}

    public static func == (lhs: JailConfig, rhs: JailConfig) -> Bool { lhs.encoded() == rhs.encoded() }

    /// Returns the configuration as helper records.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        func record(_ tag: Tag, _ parts: [String]) { record(tag, Array(parts.joined(separator: "\0").utf8)) }
        func record(_ tag: Tag, _ bytes: [UInt8]) {
            for value in [tag.rawValue, UInt32(bytes.count)] {
                for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
            }
            out.append(contentsOf: bytes)
        }
        for argument in argv { record(.argument, [argument]) }
        for entry in environment { record(.environment, [entry]) }
        record(.workingDirectory, [workingDirectory])
        record(.hostname, [hostname])
        record(.forwardStdin, [forwardStdin ? "1" : "0"])
        record(.tty, [tty ? "1" : "0"])
        if let egressSocket {
            record(.egressSocket, [egressSocket])
            record(.egressPort, [String(egressPort)])
        }
        if session { record(.session, ["1"]) }
        if let joinPid { record(.joinPid, [String(joinPid)]) }
        record(.uid, [String(uid)])
        record(.gid, [String(gid)])
        record(.idBase, [String(idBase)])
        for directory in directories { record(.directory, [directory]) }
        for link in symlinks { record(.symlink, [link.target, link.path]) }
        for file in files { record(.file, [file.path, file.content]) }
        for bind in binds {
            let flags = (bind.readOnly ? "r" : "w") + (bind.idmapped ? "i" : "") + (bind.isFile ? "f" : "")
            record(.bind, [flags, bind.source, bind.destination])
        }
        for path in readOnlyPaths { record(.readOnlyPath, [path]) }
        if !seccompProgram.isEmpty { record(.seccomp, SeccompFilter.encode(seccompProgram)) }
        if let timeoutMilliseconds { record(.timeoutMilliseconds, [String(timeoutMilliseconds)]) }
        for directory in cgroups.sharedDirectories { record(.cgroupDirectory, [directory, "keep"]) }
        for directory in cgroups.directories { record(.cgroupDirectory, [directory, "remove"]) }
        for write in cgroups.writes { record(.cgroupWrite, [write.path, write.value]) }
        for file in cgroups.procsFiles { record(.cgroupProcs, [file]) }
        for file in cgroups.killFiles { record(.cgroupKill, [file]) }
        for limit in resourceLimits { record(.resourceLimit, [String(limit.resource), String(limit.value)]) }
        return out
    }
}
