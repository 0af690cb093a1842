#if canImport(Glibc)
import Glibc
#endif

/// What the host keeps about one session sandbox, in its folder's `session.json`: enough for `ps` and `rm`
/// after hyperctl (or the supervisor) is gone.
public struct SessionRecord: Equatable, Sendable {
    /// Where the sandbox is in its life, as its supervisor last wrote it.
    public enum State: String, Sendable {
        case running, stopped
    }

    public var name: String
    public var backend: String
    public var state: State
    public var supervisorPid: Int32
    /// The supervisor's start time (clock ticks since boot): with the pid, it names that one process.
    public var supervisorStartTicks: UInt64
    public var createdSeconds: Int64
    public var workspace: String

    /// Creates a record.
    public init(name: String, backend: String, state: State, supervisorPid: Int32, supervisorStartTicks: UInt64,
                createdSeconds: Int64, workspace: String) {
        self.name = name
        self.backend = backend
        self.state = state
        self.supervisorPid = supervisorPid
        self.supervisorStartTicks = supervisorStartTicks
        self.createdSeconds = createdSeconds
        self.workspace = workspace
    }

    /// Whether the supervisor that wrote the record still runs.
    public var supervisorIsAlive: Bool { HostSystem.processStartTicks(supervisorPid) == supervisorStartTicks }

    var json: JSONValue {
        .object([("name", .string(name)), ("backend", .string(backend)), ("state", .string(state.rawValue)),
                 ("supervisorPid", .integer(supervisorPid)), ("supervisorStartTicks", .string(String(supervisorStartTicks))),
                 ("createdSeconds", .integer(createdSeconds)), ("workspace", .string(workspace))])
    }

    init?(json: JSONValue) {
        guard let name = json.string("name"), let backend = json.string("backend"),
              let state = json.string("state").flatMap(State.init(rawValue:)), let pid = json.integer("supervisorPid"),
              let ticks = json.string("supervisorStartTicks").flatMap({ UInt64($0) }), let created = json.integer("createdSeconds"),
              let workspace = json.string("workspace") else { return nil }
        self.init(name: name, backend: backend, state: state, supervisorPid: Int32(clamping: pid), supervisorStartTicks: ticks,
                  createdSeconds: created, workspace: workspace)
    }
}

/// Where session sandboxes live on this host: a private folder (mode 0700, owned by the caller) with one
/// folder per sandbox, holding its record, its supervisor's control socket and log.
///
/// The folder is `$HYPERCTL_STATE_DIR` when set, `/run/hyperctl` for root, `$XDG_RUNTIME_DIR/hyperctl`
/// otherwise, or `/tmp/hyperctl-UID` without a runtime directory.
public struct SessionStore: Sendable {
    public let directory: String

    /// A store at `directory`.
    public init(directory: String) {
        self.directory = directory
    }

    /// The caller's store.
    public static func standard() -> SessionStore {
        if let explicit = HostSystem.environmentValue("HYPERCTL_STATE_DIR"), explicit.hasPrefix("/") { return SessionStore(directory: explicit) }
        if HostSystem.isRoot { return SessionStore(directory: "/run/hyperctl") }
        if let runtime = HostSystem.environmentValue("XDG_RUNTIME_DIR"), runtime.hasPrefix("/") { return SessionStore(directory: runtime + "/hyperctl") }
        return SessionStore(directory: "/tmp/hyperctl-\(getuid())")
    }

    public func folder(_ name: String) -> String { directory + "/" + name }
    public func socketPath(_ name: String) -> String { folder(name) + "/control.sock" }
    public func logPath(_ name: String) -> String { folder(name) + "/supervisor.log" }
    func recordPath(_ name: String) -> String { folder(name) + "/session.json" }

    /// Checks a sandbox name: 1-63 letters, digits, `-`, `_` and `.`, starting with a letter or digit.
    public static func validateName(_ name: String) throws(HyperError) {
        let allowed = name.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 | 0x20 >= 97 && $0 | 0x20 <= 122) || $0 == 45 || $0 == 95 || $0 == 46 }
        guard !name.isEmpty, name.utf8.count <= 63, allowed, let first = name.utf8.first, first != 45, first != 95, first != 46 else {
            throw HyperError(.invalidArgument, "sandbox name \"\(name)\": use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit")
        }
    }

    /// Makes the store's folder if needed and checks that it is ours and private.
    public func prepare() throws(HyperError) {
        var parent = ""
        for component in directory.split(separator: "/").dropLast() {
            parent += "/" + component
            if HostSystem.fileKind(at: parent) == nil { try? HostSystem.makeDirectory(parent, mode: 0o755) }
        }
        if HostSystem.fileKind(at: directory) == nil {
            do { try HostSystem.makeDirectory(directory, mode: 0o700) } catch {
                if HostSystem.fileKind(at: directory) == nil { throw HyperError(.hostFailure, "session state: \(error)") }
            }
        }
        guard HostSystem.fileKind(at: directory) == .directory, HostSystem.symbolicLinkTarget(directory) == nil,
              let owner = HostSystem.owner(of: directory), owner.uid == getuid() else {
            throw HyperError(.hostFailure, "session state: \(directory) is not a folder owned by this user; refusing to use it")
        }
        HostSystem.setMode(directory, 0o700)
    }

    /// Claims `name` by creating its folder; fails when a sandbox of that name exists.
    public func reserve(_ name: String) throws(HyperError) {
        try Self.validateName(name)
        try prepare()
        do {
            try HostSystem.makeNewDirectory(folder(name), mode: 0o700)
        } catch {
            if error.errorNumber == EEXIST {
                throw HyperError(.invalidArgument, "a sandbox named \(name) already exists (hyperctl rm \(name) removes it)")
            }
            throw HyperError(.hostFailure, "session state: \(error)")
        }
    }

    /// The names of every sandbox in the store.
    public func names() -> [String] {
        HostSystem.directoryNames(directory).filter { HostSystem.fileKind(at: folder($0)) == .directory }.sorted()
    }

    /// The record of sandbox `name`, if it has one.
    public func record(_ name: String) -> SessionRecord? {
        guard let text = HostSystem.readText(recordPath(name)), let json = try? JSONValue.parse(text) else { return nil }
        return SessionRecord(json: json)
    }

    /// Writes the record (whole, through a rename, so that readers never see half of it).
    public func write(_ record: SessionRecord) throws(HyperError) {
        do {
            try HostSystem.writeFile(recordPath(record.name), Array((record.json.formatted() + "\n").utf8))
        } catch {
            throw HyperError(.hostFailure, "session state: \(error)")
        }
    }

    /// Removes sandbox `name`'s folder and everything in it.
    public func remove(_ name: String) {
        HostSystem.removeQuietly(socketPath(name))
        HostSystem.removeTree(folder(name))
    }
}
