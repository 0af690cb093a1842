/// The process that owns one session sandbox, as Firecracker has one VMM process per microVM: it serves the
/// sandbox's control socket (`exec`, `status`, `stop`) until the sandbox is stopped or ends, then records it
/// as stopped. Only the user it runs as may connect (the socket's folder is private, and every peer's
/// credentials are checked). The messages are in docs/sessions.md.
public final class SessionSupervisor: @unchecked Sendable {
    /// How long `stop` waits for processes to end after SIGTERM when the request names no grace period.
    public static let defaultGrace: Duration = .seconds(10)

    public let name: String
    private let store: SessionStore
    private let sandbox: any SessionSandbox
    private let listener: Int32
    private let finished: HostEvent
    private let record: Locked<SessionRecord>
    private let stopping = Locked<Bool>(false)
    private let commands = Locked<(total: Int, running: Int)>((0, 0))
    private let threads = HostThreadGroup()

    /// Listens on the sandbox's control socket and records the sandbox as running.
    public init(name: String, backend: String, workspace: String, sandbox: any SessionSandbox, store: SessionStore) throws(HyperError) {
        self.name = name
        self.store = store
        self.sandbox = sandbox
        finished = try HostEvent()
        do {
            listener = try HostSockets.listenUnix(store.socketPath(name), mode: 0o600)
        } catch {
            throw HyperError(.hostFailure, "control socket: \(error)")
        }
        let pid = HostSystem.processID
        record = Locked(SessionRecord(name: name, backend: backend, state: .running, supervisorPid: pid,
                                      supervisorStartTicks: HostSystem.processStartTicks(pid) ?? 0,
                                      createdSeconds: HostSystem.wallClockSeconds(), workspace: workspace))
        try store.write(record.value)
    }

    deinit { HostSystem.closeDescriptor(listener) }

    /// Serves until the sandbox is stopped or ends on its own; then records it as stopped.
    public func serve() {
        let sandbox = self.sandbox
        let finished = self.finished
        do {
            let watcher = try HostThread.start {
                sandbox.waitUntilEnded()
                finished.signal()
            }
            let acceptor = try HostThread.start { [self] in acceptConnections() }
            threads.add(watcher)
            threads.add(acceptor)
        } catch {
            sandbox.stop(grace: .zero)
        }
        while HostSystem.waitReadable([finished.descriptor], milliseconds: -1) != [true] {}
        stopping.withLock { $0 = true }
        // A thread blocked in accept on a Unix socket is not woken by shutdown: a last connection wakes it.
        if let wake = try? HostSockets.connectUnix(store.socketPath(name)) { HostSystem.closeDescriptor(wake) }
        HostSockets.shutdownBoth(listener)
        HostSystem.removeQuietly(store.socketPath(name))
        record.withLock { $0.state = .stopped }
        try? store.write(record.value)
        threads.joinAll()
    }

    private func acceptConnections() {
        while let client = HostSockets.accept(listener) {
            guard !stopping.value else {
                HostSystem.closeDescriptor(client)
                return
            }
            let channel = ControlChannel(descriptor: client)
            if let thread = try? HostThread.start({ [self] in serve(channel) }) {
                threads.add(thread)
            }
        }
    }

    /// Answers one connection's request.
    private func serve(_ channel: ControlChannel) {
        // The folder is private already; the credentials check holds even if its mode were loosened.
        guard let peer = channel.peerUserID(), peer == HostSystem.userIdentity.uid else {
            try? channel.send(Self.error("permission denied: this sandbox belongs to another user"))
            return
        }
        let request: JSONValue
        let descriptors: [Int32]
        do {
            guard let received = try channel.receive() else { return }
            (request, descriptors) = received
        } catch {
            try? channel.send(Self.error(error.message))
            return
        }
        defer { descriptors.forEach(HostSystem.closeDescriptor) }
        switch request.string("request") {
        case "status":
            try? channel.send(status)
        case "exec":
            runCommand(request, descriptors: descriptors, on: channel)
        case "stop":
            let grace = request.integer("graceSeconds").map { Duration.seconds(max(0, $0)) } ?? Self.defaultGrace
            stopping.withLock { $0 = true }
            sandbox.stop(grace: grace)
            finished.signal()
            try? channel.send(.object([("event", .string("stopped"))]))
        case "snapshot":
            guard let folder = request.string("folder"), folder.hasPrefix("/") else {
                try? channel.send(Self.error("snapshot needs an absolute folder"))
                return
            }
            guard !stopping.value else {
                try? channel.send(Self.error("sandbox \(name) is stopping"))
                return
            }
            do {
                try sandbox.snapshot(to: folder)
            } catch {
                try? channel.send(Self.error(error.message))
                return
            }
            try? channel.send(.object([("event", .string("snapshot")), ("folder", .string(folder))]))
        default:
            try? channel.send(Self.error("unknown request \(request.string("request") ?? request.compactText)"))
        }
    }

    /// The sandbox as `hyperctl ps` shows it.
    private var status: JSONValue {
        let counts = commands.value
        let current = record.value
        return .object([("name", .string(name)), ("backend", .string(current.backend)), ("state", .string(current.state.rawValue)),
                        ("createdSeconds", .integer(current.createdSeconds)), ("commands", .integer(counts.total)),
                        ("running", .integer(counts.running)), ("memoryBytes", sandbox.memoryInUse.map { .string(String($0)) } ?? .null)])
    }

    static func error(_ message: String) -> JSONValue { .object([("event", .string("error")), ("message", .string(message))]) }

    /// Runs one command on the caller's descriptors (stdin, stdout, stderr), relaying its signal requests,
    /// and answers `started`, then `ended` with the exit code.
    private func runCommand(_ request: JSONValue, descriptors: [Int32], on channel: ControlChannel) {
        let command: SessionCommand
        do {
            command = try Self.command(from: request)
        } catch {
            try? channel.send(Self.error(error.message))
            return
        }
        guard descriptors.count == 3 else {
            try? channel.send(Self.error("exec needs the caller's stdin, stdout and stderr (got \(descriptors.count) descriptors)"))
            return
        }
        guard !stopping.value else {
            try? channel.send(Self.error("sandbox \(name) is stopping"))
            return
        }
        let handle: any SandboxHandle
        do {
            handle = try sandbox.exec(command, streams: StandardStreams(input: descriptors[0], output: descriptors[1], error: descriptors[2]))
        } catch {
            try? channel.send(Self.error(error.message))
            return
        }
        commands.withLock { $0.total += 1; $0.running += 1 }
        defer { commands.withLock { $0.running -= 1 } }
        try? channel.send(.object([("event", .string("started"))]))
        let ended = Locked<Bool>(false)
        // The caller's signal requests go to the command; if the caller goes away, the command is killed.
        let relay = try? HostThread.start {
            while let (message, extra) = (try? channel.receive()) ?? nil {
                extra.forEach(HostSystem.closeDescriptor)
                if message.string("request") == "signal", let number = message.integer("signal"), number > 0, number < 65 {
                    try? handle.signal(Int32(number))
                }
            }
            if !ended.value { try? handle.kill() }
        }
        let result: JSONValue
        do {
            var exit = try handle.wait()
            // A command that the sandbox's time limit ended says so, as `run` would (the sandbox's own end may
            // be reported a moment after its commands').
            if exit == .signaled(9) {
                for _ in 0..<50 where !sandbox.hasTimedOut { HostSystem.sleep(milliseconds: 20) }
                if sandbox.hasTimedOut { exit = .timedOut }
            }
            result = .object([("event", .string("ended")), ("code", .integer(exit.exitCode)), ("status", exit.summary)])
        } catch {
            result = Self.error(error.message)
        }
        ended.withLock { $0 = true }
        try? channel.send(result)
        HostSockets.shutdownRead(channel.descriptor)
        relay?.join()
    }

    /// Reads an exec request: `command` (non-empty), `env` (`NAME=VALUE`), `workdir` (absolute), `tty`, `interactive`.
    static func command(from request: JSONValue) throws(HyperError) -> SessionCommand {
        guard let arguments = request.strings("command"), let program = arguments.first, !program.isEmpty else {
            throw HyperError(.invalidArgument, "exec: no command")
        }
        var environment: [EnvironmentVariable] = []
        for entry in request.strings("env") ?? [] { environment.append(try EnvironmentVariable.parse(entry)) }
        let workdir = request.string("workdir")
        if let workdir { try SandboxSpec.checkSandboxPath(workdir, field: "workdir") }
        return SessionCommand(arguments: arguments, environment: environment, workingDirectory: workdir,
                              interactive: request.bool("interactive") ?? false, tty: request.bool("tty") ?? false)
    }
}
