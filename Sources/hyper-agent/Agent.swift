import CHyperAgent
import Glibc
import HyperAgentProtocol

/// The guest agent's service loop: one control channel, any number of commands at once.
///
/// It receives the workspace, runs each command with its streams relayed as messages under the command's
/// id, reports how each ended, and sends back what changed in the workspace when the host asks.
final class Agent {
    /// One running command and its streams.
    private struct RunningCommand {
        var pid: pid_t
        var output: Int32
        var errorOutput: Int32
        var input: Int32
        var pendingInput: [UInt8] = []
        var inputClosed = false
        var terminal: Bool
    }

    private let channel: Int32
    private let childSignals: Int32
    private var decoder = FrameDecoder()

    // The workspace transfer from the host, and what it held (to send back only what changed).
    private var workspaceRoot: String?
    private var writer: FileTreeWriter?
    private var received: [String: FileHeader] = [:]

    /// The running commands by id.
    private var commands: [UInt32: RunningCommand] = [:]

    /// The egress proxy's in-guest listener, once the host set it up.
    private var proxyRelay: GuestProxyRelay?
    /// The Docker flavour's daemon, until it is ready.
    private var docker: DockerDaemon?

    init(channel: Int32, childSignals: Int32, docker: DockerDaemon?) {
        self.channel = channel
        self.childSignals = childSignals
        self.docker = docker
    }

    func send(_ message: AgentMessage) {
        _ = GuestSystem.writeAll(channel, message.frame)  // On failure the host is gone: nothing to tell.
    }

    /// Serves until the host asks for shutdown.
    func serve() -> Never {
        while true {
            var watched: [(Int32, Int16)] = [(channel, Int16(POLLIN)), (childSignals, Int16(POLLIN))]
            var owners: [Int32: (id: UInt32, stream: Int)] = [:]
            for (id, command) in commands {
                if command.output >= 0 {
                    watched.append((command.output, Int16(POLLIN)))
                    owners[command.output] = (id, 1)
                }
                if command.errorOutput >= 0 {
                    watched.append((command.errorOutput, Int16(POLLIN)))
                    owners[command.errorOutput] = (id, 2)
                }
                // A terminal is both output and input: its writability is watched on the same descriptor.
                if command.input >= 0 && !command.pendingInput.isEmpty {
                    watched.append((command.input, Int16(POLLOUT)))
                    if owners[command.input] == nil { owners[command.input] = (id, 0) }
                }
            }
            if let proxyRelay { watched += proxyRelay.watched }
            if let docker { watched += docker.watched }
            let events = GuestSystem.poll(watched, milliseconds: docker?.pollTimeoutMilliseconds ?? -1)
            if let docker, let report = docker.advance() {
                send(.daemonReady(report))
                self.docker = nil
            }
            for (entry, seen) in zip(watched, events) where seen != 0 {
                if entry.0 == channel {
                    if let bytes = GuestSystem.read(channel, count: 64 * 1024), !bytes.isEmpty {
                        decoder.append(bytes)
                        handleMessages()
                    }
                } else if entry.0 == childSignals {
                    chyper_agent_drain(childSignals)
                    reapChildren()
                } else if let owner = owners[entry.0], commands[owner.id] != nil {
                    if entry.1 == Int16(POLLOUT) {
                        flushInput(owner.id)
                    } else {
                        relay(owner.id, errorStream: owner.stream == 2)
                    }
                } else {
                    _ = proxyRelay?.handle(descriptor: entry.0, events: seen)
                }
            }
        }
    }

    private func handleMessages() {
        do {
            while let message = try decoder.next() { try handle(message) }
        } catch let error as AgentError {
            send(.failure(error.description))
        } catch let error as AgentProtocolError {
            send(.failure("guest agent: \(error)"))
        } catch {
            send(.failure("guest agent: \(error)"))
        }
    }

    private func handle(_ message: AgentMessage) throws {
        switch message {
        case let .filesBegin(root):
            guard root.hasPrefix("/") else { throw AgentError.protocolViolation("workspace root \(root) is not absolute") }
            try makeDirectories(root)
            workspaceRoot = root
            received = [:]
            do { writer = try FileTreeWriter(root: root) } catch { throw AgentError.transfer(error) }
        case let .file(header):
            guard let writer else { throw AgentError.protocolViolation("a file outside a transfer") }
            do { try writer.begin(header) } catch { throw AgentError.transfer(error) }
            received[header.path] = header
        case let .fileData(bytes):
            guard let writer else { throw AgentError.protocolViolation("file data outside a transfer") }
            do { try writer.data(bytes) } catch { throw AgentError.transfer(error) }
        case .filesEnd:
            do { try writer?.finish() } catch { throw AgentError.transfer(error) }
            writer = nil
        case let .exec(request):
            try start(request)
        case let .stdin(id, bytes):
            guard var command = commands[id] else { return }  // It ended: what was still on the way is dropped.
            if bytes.isEmpty { command.inputClosed = true } else { command.pendingInput += bytes }
            commands[id] = command
            flushInput(id)
        case let .signal(id, number):
            if let command = commands[id] { kill(-command.pid, number) }
        case let .resize(id, rows, columns):
            if let command = commands[id], command.terminal, command.output >= 0 { _ = chyper_agent_set_window(command.output, rows, columns) }
        case .returnWorkspace:
            sendChanges()
        case let .identity(identity):
            guard GuestSystem.setIdentity(hostname: identity.hostname, seed: identity.seed) else {
                throw AgentError.system("set the hostname and reseed the random generator", errno)
            }
            guard GuestSystem.setRealtime(identity.realtimeNanoseconds) else { throw AgentError.system("set the clock", errno) }
        case .shutdown:
            chyper_agent_power_off()
        case let .setup(setup):
            guard proxyRelay == nil else { throw AgentError.protocolViolation("a second setup") }
            try GuestSetup.writeSecretFiles(setup.secretFiles)
            if setup.proxyPort != 0 {
                proxyRelay = try GuestProxyRelay(port: setup.proxyPort) { [unowned self] message in send(message) }
            }
        case .connectionData, .connectionAcknowledge, .connectionClose:
            guard let proxyRelay else { throw AgentError.protocolViolation("a proxy connection message without a proxy") }
            try proxyRelay.handle(message)
        case .removed, .ready, .started, .stdout, .stderr, .exited, .failure, .connectionOpen, .daemonReady:
            throw AgentError.protocolViolation("unexpected message from the host: \(message)")
        }
    }

    private func makeDirectories(_ path: String) throws {
        var partial = ""
        for component in path.split(separator: "/") {
            partial += "/" + component
            guard GuestSystem.makeDirectory(partial) else { throw AgentError.system("mkdir \(partial)", errno) }
        }
    }

    private func start(_ request: AgentExec) throws {
        guard commands[request.id] == nil else { throw AgentError.protocolViolation("exec of command \(request.id), which runs already") }
        var streams: [Int32] = []
        var terminalPath: String?
        var command = RunningCommand(pid: 0, output: -1, errorOutput: -1, input: -1, terminal: request.tty)
        if request.tty {
            guard let terminal = GuestSystem.openTerminal(rows: request.rows, columns: request.columns) else {
                throw AgentError.system("open a terminal", errno)
            }
            terminalPath = terminal.path
            command.output = terminal.controller
            command.input = request.interactive ? terminal.controller : -1
            streams = [-1, -1, -1]
        } else {
            guard let stdoutPipe = GuestSystem.pipe(), let stderrPipe = GuestSystem.pipe() else { throw AgentError.system("pipe", errno) }
            var commandInput: Int32
            if request.interactive {
                guard let stdinPipe = GuestSystem.pipe() else { throw AgentError.system("pipe", errno) }
                command.input = stdinPipe.write
                commandInput = stdinPipe.read
            } else {
                commandInput = GuestSystem.open("/dev/null", O_RDONLY | O_CLOEXEC)
            }
            command.output = stdoutPipe.read
            command.errorOutput = stderrPipe.read
            streams = [commandInput, stdoutPipe.write, stderrPipe.write]
        }
        for fd in Set([command.output, command.errorOutput, command.input]) where fd >= 0 { _ = fcntl(fd, F_SETFL, O_NONBLOCK) }
        let cgroup = GuestSetup.commandCgroup(pidsLimit: request.pidsLimit)
        let pid = GuestSystem.spawn(arguments: request.arguments, environment: request.environment, directory: request.workingDirectory,
                                    streams: streams, terminal: terminalPath, cgroupProcs: cgroup)
        for fd in streams where fd >= 0 { close(fd) }
        guard pid > 0 else {
            for fd in Set([command.output, command.errorOutput, command.input]) where fd >= 0 { close(fd) }
            throw AgentError.system("start \(request.arguments[0])", errno)
        }
        command.pid = pid
        commands[request.id] = command
        send(.started(request.id, pid: pid))
    }

    private func flushInput(_ id: UInt32) {
        guard var command = commands[id], command.input >= 0 else { return }
        defer { commands[id] = command }
        while !command.pendingInput.isEmpty {
            let wrote = GuestSystem.write(command.input, command.pendingInput)
            if wrote < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN { return }
                command.pendingInput = []  // The command closed its stdin.
                break
            }
            command.pendingInput.removeFirst(wrote)
        }
        if command.inputClosed && !command.terminal {
            close(command.input)
            command.input = -1
        } else if command.inputClosed && command.terminal {
            command.pendingInput = [4]  // ^D ends input on a terminal in canonical mode.
            command.inputClosed = false
        }
    }

    /// Relays what one of a command's streams has; closes it at end of file.
    private func relay(_ id: UInt32, errorStream: Bool) {
        guard var command = commands[id] else { return }
        var fd = errorStream ? command.errorOutput : command.output
        while fd >= 0 {
            let bytes = GuestSystem.read(fd, count: AgentProtocol.chunkSize)
            if let bytes, !bytes.isEmpty {
                send(errorStream ? .stderr(id, bytes) : .stdout(id, bytes))
                continue
            }
            if bytes == nil && errno == EINTR { continue }
            if bytes == nil && errno == EAGAIN { break }
            if fd == command.input { command.input = -1 }
            close(fd)
            fd = -1
        }
        if errorStream { command.errorOutput = fd } else { command.output = fd }
        commands[id] = command
    }

    private func reapChildren() {
        // As PID 1 the agent reaps every orphan too; only the commands' ends are reported.
        while let child = GuestSystem.reapChild() {
            if let id = commands.first(where: { $0.value.pid == child.pid })?.key { finishCommand(id, status: child.status) }
            if let failure = docker?.failure(whenEnded: child.pid, status: child.status) {
                send(.failure(failure))
                docker = nil
            }
        }
    }

    private func finishCommand(_ id: UInt32, status: Int32) {
        // What the command wrote before it ended still goes out, first.
        relay(id, errorStream: false)
        relay(id, errorStream: true)
        if let command = commands[id] {
            for fd in Set([command.output, command.errorOutput, command.input]) where fd >= 0 { close(fd) }  // A terminal is both.
        }
        commands[id] = nil
        let signal = status & 0x7F
        send(.exited(id, signal == 0 ? .exited((status >> 8) & 0xFF) : .signaled(signal)))
    }

    /// Sends every object of the workspace that is new or changed since the host's copy, and every path
    /// that is gone.
    private func sendChanges() {
        guard let root = workspaceRoot else { return }
        send(.filesBegin(root: root))
        do {
            let now = try FileTree.list(root: root)
            var present = Set<String>()
            for header in now {
                present.insert(header.path)
                if let before = received[header.path], before.kind == header.kind {
                    switch header.kind {
                    case .directory where before.mode == header.mode: continue
                    case .symbolicLink where before.linkTarget == header.linkTarget: continue
                    case .regular where before.size == header.size && before.modificationNanoseconds == header.modificationNanoseconds && before.mode == header.mode: continue
                    default: break
                    }
                }
                send(.file(header))
                if header.kind == .regular {
                    let reader = try FileChunkReader(path: root + "/" + header.path, size: header.size)
                    while let chunk = try reader.next() { send(.fileData(chunk)) }
                }
            }
            // Children before their directories.
            for path in received.keys.sorted(by: >) where !present.contains(path) { send(.removed(path)) }
            received = Dictionary(uniqueKeysWithValues: now.map { ($0.path, $0) })
        } catch {
            send(.failure("guest agent: sending the workspace back: \(error)"))
        }
        send(.filesEnd)
    }
}
