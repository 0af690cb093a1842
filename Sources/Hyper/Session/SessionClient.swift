/// How hyperctl's session commands reach sandboxes: through each one's record and its supervisor's socket.
public struct SessionClient: Sendable {
    /// How long a supervisor may take to answer `status`.
    static let statusTimeoutMilliseconds: Int32 = 5000

    public let store: SessionStore

    /// A client of `store`.
    public init(store: SessionStore) {
        self.store = store
    }

    /// One sandbox as `hyperctl ps` lists it.
    public struct Listing: Equatable, Sendable {
        public var name: String
        public var backend: String
        /// running, stopped, starting, or dead (its supervisor is gone without stopping it).
        public var state: String
        public var createdSeconds: Int64?
        public var commands: Int?
        public var runningCommands: Int?
        public var memoryBytes: UInt64?
    }

    /// Whether a sandbox named `name` exists in the store.
    public func exists(_ name: String) -> Bool { HostSystem.fileKind(at: store.folder(name)) == .directory }

    /// Connects to sandbox `name`'s supervisor, or says why it cannot.
    public func connect(_ name: String) throws(HyperError) -> ControlChannel {
        try SessionStore.validateName(name)
        guard exists(name) else { throw HyperError(.invalidArgument, "no sandbox named \(name) (hyperctl ps lists them)") }
        guard let record = store.record(name) else {
            throw HyperError(.phaseFailed, "sandbox \(name) has no record: it is starting, or its creation failed (hyperctl rm \(name) removes it)")
        }
        guard record.state != .stopped else { throw HyperError(.phaseFailed, "sandbox \(name) is stopped (hyperctl rm \(name) removes it)") }
        guard record.supervisorIsAlive else {
            throw HyperError(.phaseFailed, "sandbox \(name) is dead: its supervisor (pid \(record.supervisorPid)) is gone; hyperctl rm \(name) cleans it up")
        }
        return try ControlChannel.connect(store.socketPath(name))
    }

    /// Every sandbox in the store, by name.
    public func list() -> [Listing] {
        store.names().map { name in
            guard let record = store.record(name) else {
                return Listing(name: name, backend: "-", state: "starting")
            }
            var listing = Listing(name: name, backend: record.backend, state: record.state.rawValue, createdSeconds: record.createdSeconds)
            guard record.state != .stopped else { return listing }
            guard record.supervisorIsAlive else {
                listing.state = "dead"
                return listing
            }
            if let channel = try? ControlChannel.connect(store.socketPath(name)),
               (try? channel.send(.object([("request", .string("status"))]))) != nil,
               let (answer, extra) = (try? channel.receive(timeoutMilliseconds: Self.statusTimeoutMilliseconds)) ?? nil {
                extra.forEach(HostSystem.closeDescriptor)
                listing.commands = answer.integer("commands").map { Int($0) }
                listing.runningCommands = answer.integer("running").map { Int($0) }
                listing.memoryBytes = answer.string("memoryBytes").flatMap { UInt64($0) }
                if let state = answer.string("state") { listing.state = state }
            }
            return listing
        }
    }

    /// Stops sandbox `name`: SIGTERM to its processes, SIGKILL after `grace`. Returns once it is stopped.
    public func stop(_ name: String, grace: Duration) throws(HyperError) {
        let channel = try connect(name)
        try channel.send(.object([("request", .string("stop")), ("graceSeconds", .integer(grace.components.seconds))]))
        guard let (answer, extra) = try channel.receive() else {
            throw HyperError(.phaseFailed, "sandbox \(name): the supervisor ended without confirming the stop")
        }
        extra.forEach(HostSystem.closeDescriptor)
        guard answer.string("event") == "stopped" else {
            throw HyperError(.phaseFailed, "sandbox \(name): \(answer.string("message") ?? answer.compactText)")
        }
    }

    /// Writes sandbox `name` to the snapshot folder `folder` (absolute; it must not exist); the sandbox goes on.
    public func snapshot(_ name: String, to folder: String) throws(HyperError) {
        let channel = try connect(name)
        try channel.send(.object([("request", .string("snapshot")), ("folder", .string(folder))]))
        guard let (answer, extra) = try channel.receive() else {
            throw HyperError(.phaseFailed, "sandbox \(name): the supervisor ended without confirming the snapshot")
        }
        extra.forEach(HostSystem.closeDescriptor)
        guard answer.string("event") == "snapshot" else {
            throw HyperError(.phaseFailed, "sandbox \(name): \(answer.string("message") ?? answer.compactText)")
        }
    }

    /// Kills a dead or unresponsive sandbox's supervisor, if it still runs, and removes the sandbox's folder.
    /// The backend's own leftovers go with the backends' sweep.
    public func remove(_ name: String) {
        if let record = store.record(name), record.supervisorIsAlive {
            HostSystem.sendSignal(9, to: record.supervisorPid)
            for _ in 0..<200 where record.supervisorIsAlive { HostSystem.sleep(milliseconds: 10) }
        }
        store.remove(name)
    }
}
