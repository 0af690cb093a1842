import CHyperAgent
import Glibc
import HyperAgentProtocol

/// The guest agent's service loop: one control channel, one command at a time.
///
/// It receives the workspace, runs the command with its streams relayed as messages, reports how it ended,
/// and sends back what the command changed in the workspace.
final class Agent {
    private let channel: Int32
    private let childSignals: Int32
    private var decoder = FrameDecoder()

    // The workspace transfer from the host, and what it held (to send back only what changed).
    private var workspaceRoot: String?
    private var writer: FileTreeWriter?
    private var received: [String: FileHeader] = [:]

    // The running command.
    private var command: pid_t = 0
    private var output: Int32 = -1
    private var errorOutput: Int32 = -1
    private var input: Int32 = -1
    private var pendingInput: [UInt8] = []
    private var inputClosed = false
    private var terminal = false

    /// The egress proxy's in-guest listener, once the host set it up.
    private var proxyRelay: GuestProxyRelay?

    init(channel: Int32, childSignals: Int32) {
        self.channel = channel
        self.childSignals = childSignals
    }

    func send(_ message: AgentMessage) {
        _ = GuestSystem.writeAll(channel, message.frame)  // On failure the host is gone: nothing to tell.
    }

    /// Serves until the host asks for shutdown.
    func serve() -> Never {
        while true {
            var watched: [(Int32, Int16)] = [(channel, Int16(POLLIN)), (childSignals, Int16(POLLIN))]
            if output >= 0 { watched.append((output, Int16(POLLIN))) }
            if errorOutput >= 0 { watched.append((errorOutput, Int16(POLLIN))) }
            if input >= 0 && !pendingInput.isEmpty { watched.append((input, Int16(POLLOUT))) }
            if let proxyRelay { watched += proxyRelay.watched }
            let events = GuestSystem.poll(watched)
            for (entry, seen) in zip(watched, events) where seen != 0 {
                switch entry.0 {
                case channel:
                    if let bytes = GuestSystem.read(channel, count: 64 * 1024), !bytes.isEmpty {
                        decoder.append(bytes)
                        handleMessages()
                    }
                case childSignals:
                    chyper_agent_drain(childSignals)
                    reapChildren()
                case output where output >= 0:
                    relay(from: &output, as: AgentMessage.stdout)
                case errorOutput where errorOutput >= 0:
                    relay(from: &errorOutput, as: AgentMessage.stderr)
                case input where input >= 0:
                    flushInput()
                default:
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
        case let .stdin(bytes):
            if bytes.isEmpty { inputClosed = true } else { pendingInput += bytes }
            flushInput()
        case let .signal(number):
            if command > 0 { kill(-command, number) }
        case let .resize(rows, columns):
            if terminal && output >= 0 { _ = chyper_agent_set_window(output, rows, columns) }
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
        case .removed, .ready, .started, .stdout, .stderr, .exited, .failure, .connectionOpen:
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
        guard command == 0 else { throw AgentError.protocolViolation("exec while a command runs") }
        var streams: [Int32] = []
        var terminalPath: String?
        terminal = request.tty
        if request.tty {
            guard let terminal = GuestSystem.openTerminal(rows: request.rows, columns: request.columns) else {
                throw AgentError.system("open a terminal", errno)
            }
            terminalPath = terminal.path
            output = terminal.controller
            input = request.interactive ? terminal.controller : -1
            streams = [-1, -1, -1]
        } else {
            guard let stdoutPipe = GuestSystem.pipe(), let stderrPipe = GuestSystem.pipe() else { throw AgentError.system("pipe", errno) }
            var commandInput: Int32
            if request.interactive {
                guard let stdinPipe = GuestSystem.pipe() else { throw AgentError.system("pipe", errno) }
                input = stdinPipe.write
                commandInput = stdinPipe.read
            } else {
                commandInput = GuestSystem.open("/dev/null", O_RDONLY | O_CLOEXEC)
            }
            output = stdoutPipe.read
            errorOutput = stderrPipe.read
            streams = [commandInput, stdoutPipe.write, stderrPipe.write]
        }
        for fd in [output, errorOutput, input] where fd >= 0 { _ = fcntl(fd, F_SETFL, O_NONBLOCK) }
        pendingInput = []
        inputClosed = false
        let cgroup = GuestSetup.commandCgroup(pidsLimit: request.pidsLimit)
        let pid = GuestSystem.spawn(arguments: request.arguments, environment: request.environment, directory: request.workingDirectory,
                                    streams: streams, terminal: terminalPath, cgroupProcs: cgroup)
        for fd in streams where fd >= 0 { close(fd) }
        guard pid > 0 else { throw AgentError.system("start \(request.arguments[0])", errno) }
        command = pid
        send(.started(pid: pid))
    }

    private func flushInput() {
        guard input >= 0 else { return }
        while !pendingInput.isEmpty {
            let wrote = GuestSystem.write(input, pendingInput)
            if wrote < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN { return }
                pendingInput = []  // The command closed its stdin.
                break
            }
            pendingInput.removeFirst(wrote)
        }
        if inputClosed && !terminal {
            close(input)
            input = -1
        } else if inputClosed && terminal {
            pendingInput = [4]  // ^D ends input on a terminal in canonical mode.
            inputClosed = false
        }
    }

    /// Relays what a stream has; closes it at end of file.
    private func relay(from fd: inout Int32, as message: ([UInt8]) -> AgentMessage) {
        while fd >= 0 {
            let bytes = GuestSystem.read(fd, count: AgentProtocol.chunkSize)
            if let bytes, !bytes.isEmpty {
                send(message(bytes))
                continue
            }
            if bytes == nil && errno == EINTR { continue }
            if bytes == nil && errno == EAGAIN { return }
            if fd == input { input = -1 }
            close(fd)
            fd = -1
        }
    }

    private func reapChildren() {
        // As PID 1 the agent reaps every orphan too; only the command's end is reported.
        while let child = GuestSystem.reapChild() {
            if child.pid == command { finishCommand(status: child.status) }
        }
    }

    private func finishCommand(status: Int32) {
        // What the command wrote before it ended still goes out, first.
        relay(from: &output, as: AgentMessage.stdout)
        relay(from: &errorOutput, as: AgentMessage.stderr)
        for fd in Set([output, errorOutput, input]) where fd >= 0 { close(fd) }  // A terminal is both output and input.
        output = -1
        errorOutput = -1
        input = -1
        command = 0
        let signal = status & 0x7F
        send(.exited(signal == 0 ? .exited((status >> 8) & 0xFF) : .signaled(signal)))
        sendChanges()
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
