import HyperAgentProtocol
import Synchronization

/// A sandbox that is a Linux microVM: the guest kernel boots, the guest agent (PID 1) says it is ready on
/// the virtio-console, the workspace is copied in, the command runs with its streams relayed, and what it
/// changed in the workspace is copied back before the VM is torn down.
///
/// The host side of the session runs on a thread of its own; `wait` joins it. See docs/guest-protocol.md.
public final class MicroVMSandbox: SandboxHandle, @unchecked Sendable {
    public let streams: StandardStreams

    /// How long a guest may take to say it is ready when the spec sets no timeout.
    public static let defaultBootTimeout: Duration = .seconds(60)
    /// How long the guest gets to send the workspace back after a timeout killed the command.
    static let collectGrace: UInt64 = 10_000_000_000
    /// How long the guest may go silent while it sends the workspace back (without a time limit).
    static let collectIdleLimit: UInt64 = 60_000_000_000
    /// How long a clean shutdown may take before the VM is simply stopped.
    static let shutdownGrace: UInt64 = 1_000_000_000
    /// How many bytes of host input may wait for the guest before the sender pauses.
    static let inputWindow = 256 * 1024
    /// How many bytes of guest output may wait for the host before the guest's writes stall.
    static let outputWindow = 1 << 20
    /// The guest kernel's command line (the console on COM1, reset through the i8042 on reboot and panic).
    public static let kernelCommandLine = "console=ttyS0 reboot=k panic=-1 quiet pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"
    /// SIGWINCH, and the signals that end a sandbox whose command has not started (INT, TERM, HUP, QUIT).
    static let windowChange: Int32 = 28
    static let endingSignals: Set<Int32> = [2, 15, 1, 3]
    /// The default guest memory when the spec sets no memory limit.
    public static let defaultMemory: UInt64 = 512 << 20

    private let spec: SandboxSpec
    private let signals: (any SignalRelay)?
    private let launchTime: UInt64
    private let bootTimeout: Duration
    private let vm: MicroVM
    private let console: VirtioConsole
    private let consoleTransport: VirtioMMIOTransport
    private let wake: HostEvent
    private let inbox = Locked<[UInt8]>([])
    private let vmEnd = Locked<Result<VMExit, HyperError>?>(nil)
    private let events = Mutex<[PhaseEvent]>([])
    private let details = Mutex<[(String, JSONValue)]>([])
    private let killRequested = Atomic<Bool>(false)
    private let agentReady = Atomic<Bool>(false)
    private let outcome = Mutex<Result<SandboxExit, HyperError>?>(nil)
    private let session = Mutex<HostThread?>(nil)
    private let secrets: SandboxSecrets
    /// For a network allowlist: the egress proxy, and the bridge that carries the guest's connections to it.
    private let egress: (proxy: EgressProxy, bridge: GuestEgressBridge, log: Int32)?

    /// Builds and starts the microVM for `spec` on `hypervisor`.
    /// - Parameter signals: signals to relay to the command (hyperctl's own), when given.
    public init(spec: SandboxSpec, options: LaunchOptions, kit: GuestKit, hypervisor: any Hypervisor, signals: (any SignalRelay)? = nil,
                bootTimeout: Duration = defaultBootTimeout) throws(HyperError) {
        launchTime = HostSystem.monotonicNanoseconds()
        self.signals = signals
        self.spec = spec
        self.bootTimeout = bootTimeout
        streams = options.streams
        let kernel = try GuestLoader.readImage(kit.kernelPath, what: "kernel")
        let initrd = try GuestLoader.readImage(kit.initrdPath, what: "initrd")
        let memory = spec.limits.memoryBytes ?? Self.defaultMemory
        guard memory >= 128 << 20 else {
            throw HyperError(.invalidSpec, "memory: a microVM sandbox needs at least 128 MiB (its kernel and agent live there too); \(Units.formatSize(memory)) was asked")
        }
        let vcpus = max(1, Int((spec.limits.cpus ?? 1).rounded(.up)))

        let wake = try HostEvent()
        self.wake = wake
        let inbox = self.inbox
        console = VirtioConsole { bytes in
            inbox.withLock { $0 += bytes }
            wake.signal()
        }
        console.onDelivered = { wake.signal() }
        // Guest output waits in the guest (its writes stall) while the host has a backlog to write out.
        console.acceptsOutput = { inbox.withLock { $0.count } < Self.outputWindow }
        let random = try HostRandom()
        let entropy = VirtioEntropy { count in random.bytes(count) }
        var consoleMirror: Int32?
        if let path = options.guestConsolePath {
            do { consoleMirror = try HostSystem.createFile(path) } catch { throw HyperError(.invalidArgument, "--guest-console: \(error)") }
        }
        let configuration = MicroVM.Configuration(kernel: kernel, kernelName: kit.kernelPath, initrd: initrd, commandLine: Self.kernelCommandLine,
                                                  memoryBytes: memory, vcpus: vcpus)
        var devices: [any VirtioDevice] = [console, entropy]
        for (index, disk) in options.disks.enumerated() {
            let storage = try FileBlockStorage(path: disk.path, writable: !disk.readOnly)
            devices.append(VirtioBlock(storage: storage, readOnly: disk.readOnly, identifier: "hyperctl-disk\(index)"))
        }
        vm = try MicroVM(configuration, devices: devices, console: ConsoleLog(mirror: consoleMirror), on: hypervisor)
        consoleTransport = vm.transports[0]
        secrets = try SandboxSecrets.read(spec)
        if case let .allow(destinations) = spec.network {
            let channel = ControlChannelWriter(console: console, transport: consoleTransport)
            // Its own copy of stderr: the caller may close theirs once the sandbox has started.
            let log = HostSystem.duplicate(streams.error)
            let proxy = try EgressProxy(policy: EgressPolicy(destinations: destinations), socketPath: nil, secrets: secrets,
                                        onDecision: EgressProxy.logDenials(to: log))
            let bridge = try GuestEgressBridge(proxy: proxy) { message in channel.send(message.frame) }
            egress = (proxy, bridge, log)
        } else {
            egress = nil
        }
        record(.created)
        details.withLock { $0 = [("vcpus", .integer(Int32(vcpus))), ("memoryBytes", .string(String(memory)))] }
        let vmEnd = self.vmEnd
        do {
            try vm.start { result in
                vmEnd.withLock { $0 = result }
                wake.signal()
            }
        } catch {
            stopEgress()
            throw error
        }
        let thread: HostThread
        do {
            thread = try HostThread.start { [self] in
                let result: Result<SandboxExit, HyperError>
                do throws(HyperError) {
                    result = .success(try runSession())
                } catch {
                    result = .failure(error)
                }
                vm.stop()
                stopEgress()
                outcome.withLock { $0 = result }
            }
        } catch {
            vm.stop()
            stopEgress()
            throw error
        }
        session.withLock { $0 = thread }
    }

    /// Stops the egress proxy and its bridge, and puts the proxy's decisions in the report.
    private func stopEgress() {
        guard let egress else { return }
        egress.bridge.stop()
        egress.proxy.stop()
        HostSystem.closeDescriptor(egress.log)
        details.withLock { $0.append(("egress", .array(egress.proxy.decisions.map(\.summary)))) }
    }

    public var timeline: [PhaseEvent] { events.withLock { $0 } }
    public var reportDetails: [(String, JSONValue)] { details.withLock { $0 } }

    public func wait() throws(HyperError) -> SandboxExit {
        let thread = session.withLock { held in
            defer { held = nil }
            return held
        }
        thread?.join()
        guard let result = outcome.withLock({ $0 }) else {
            throw HyperError(.phaseFailed, "the sandbox session ended without a result")
        }
        return try result.get()
    }

    public func signal(_ number: Int32) throws(HyperError) {
        guard agentReady.load(ordering: .sequentiallyConsistent) else {
            try kill()
            return
        }
        send(.signal(number))
    }

    public func kill() throws(HyperError) {
        killRequested.store(true, ordering: .sequentiallyConsistent)
        wake.signal()
    }

    private func record(_ phase: SandboxPhase, at time: UInt64 = HostSystem.monotonicNanoseconds()) {
        let elapsed = time > launchTime ? time - launchTime : 0
        events.withLock { $0.append(PhaseEvent(phase: phase, nanoseconds: elapsed)) }
    }

    private func send(_ message: AgentMessage) { sendFrames(message.frame) }

    private func sendFrames(_ frames: [UInt8]) {
        ControlChannelWriter(console: console, transport: consoleTransport).send(frames)
    }

    /// Where the session is.
    private enum Stage {
        case booting, sendingWorkspace, starting, running, receivingWorkspace, finished
    }

    /// The host side of the guest session; returns how the command ended.
    private func runSession() throws(HyperError) -> SandboxExit {
        var decoder = FrameDecoder()
        var stage = Stage.booting
        var sender: WorkspaceSender?
        var writer: FileTreeWriter?
        var status: SandboxExit?
        var inputOpen = spec.interactive
        let limit = spec.limits.timeout
        let bootDeadline = launchTime + UInt64(max(0, (limit ?? bootTimeout).nanoseconds))
        let deadline = limit.map { launchTime + UInt64(max(0, $0.nanoseconds)) }
        var collectDeadline: UInt64?
        var idleDeadline: UInt64?

        while true {
            let now = HostSystem.monotonicNanoseconds()
            if killRequested.load(ordering: .sequentiallyConsistent) { return .signaled(9) }
            // Deadlines: the boot, the command's time limit, and the grace for copying back after it.
            if stage == .booting || stage == .sendingWorkspace || stage == .starting, now >= bootDeadline, limit == nil {
                throw HyperError(.phaseFailed, "the guest agent was not ready after \(Units.formatDuration(bootTimeout))\(consoleTail())")
            }
            if let deadline, now >= deadline, status != .timedOut {
                status = .timedOut
                guard stage == .running || stage == .receivingWorkspace, !spec.workspace.isEmpty else { return .timedOut }
                send(.signal(9))
                collectDeadline = now + Self.collectGrace
            }
            if let collectDeadline, now >= collectDeadline { return .timedOut }
            if let idleDeadline, now >= idleDeadline {
                throw HyperError(.phaseFailed, "the guest stopped sending the workspace back (nothing for \(Self.collectIdleLimit / 1_000_000_000) s)")
            }
            if let failure = consoleTransport.failure {
                throw HyperError(.phaseFailed, "the guest broke its control channel (virtio-console: \(failure))")
            }
            if let violation = egress?.bridge.protocolViolation { throw protocolError(violation) }

            let until = [deadline, collectDeadline, idleDeadline, limit == nil ? bootDeadline : nil].compactMap { $0 }.min()
            let milliseconds = until.map { Int32(clamping: ($0 > now ? $0 - now : 0) / 1_000_000 + 1) } ?? -1
            // Stdin is read only while the guest keeps up with it.
            let watchInput = inputOpen && stage == .running && consoleBacklog() < Self.inputWindow
            var watched = [wake.descriptor]
            if let signals { watched.append(signals.descriptor) }
            if watchInput { watched.append(streams.input) }
            let ready = HostSystem.waitReadable(watched, milliseconds: milliseconds)
            wake.clear()

            // Signals to hyperctl go to the command; before it runs, the ending ones end the sandbox.
            for number in signals?.take() ?? [] {
                if stage == .running {
                    if number == Self.windowChange {
                        if spec.tty, let size = HostSystem.windowSize(streams.input) { send(.resize(rows: size.rows, columns: size.columns)) }
                    } else {
                        send(.signal(number))
                    }
                } else if Self.endingSignals.contains(number) {
                    return .signaled(number)
                }
            }

            // Messages from the guest.
            let received = inbox.withLock { bytes in
                defer { bytes = [] }
                return bytes
            }
            decoder.append(received)
            // Without a time limit, a guest that goes silent while sending the workspace back is cut off.
            if idleDeadline != nil, !received.isEmpty { idleDeadline = now + Self.collectIdleLimit }
            if received.count >= Self.outputWindow {
                let console = self.console
                consoleTransport.perform { rings throws(VirtQueueError) in try console.resumeOutput(rings: rings) }
            }
            while true {
                let message: AgentMessage?
                do { message = try decoder.next() } catch { throw HyperError(.phaseFailed, "\(error)") }
                guard let message else { break }
                switch message {
                case let .ready(report):
                    guard stage == .booting else { throw protocolError("a second ready message") }
                    guard report.version == AgentProtocol.version else {
                        throw HyperError(.phaseFailed, "the guest agent speaks protocol version \(report.version); this hyperctl speaks \(AgentProtocol.version): rebuild the guest kit")
                    }
                    let arrival = HostSystem.monotonicNanoseconds()
                    // The guest's uptime starts with its kernel: that dates the kernel's entry on the host clock.
                    let kernelEntry = max(launchTime, arrival > report.readyNanoseconds ? arrival - report.readyNanoseconds : launchTime)
                    record(.booted, at: kernelEntry)
                    record(.agentReady, at: arrival)
                    agentReady.store(true, ordering: .sequentiallyConsistent)
                    details.withLock {
                        $0.append(("guestKernel", .string(report.kernelRelease)))
                        $0.append(("guestAgentStartNanoseconds", .string(String(report.agentStartNanoseconds))))
                        $0.append(("guestReadyNanoseconds", .string(String(report.readyNanoseconds))))
                    }
                    if egress != nil || !secrets.entries.isEmpty {
                        send(.setup(AgentSandboxSetup(proxyPort: egress == nil ? 0 : EgressProxy.sandboxPort,
                                                      secretFiles: secrets.entries.map { ($0.name, $0.visibleValue) })))
                    }
                    if spec.workspace.isEmpty {
                        stage = .starting
                        send(.exec(execRequest()))
                    } else {
                        stage = .sendingWorkspace
                        sender = try WorkspaceSender(root: spec.workspace)
                    }
                case let .started(pid):
                    guard stage == .starting else { throw protocolError("started before exec") }
                    record(.commandStarted)
                    details.withLock { $0.append(("guestPid", .integer(pid))) }
                    stage = .running
                case let .stdout(bytes):
                    try? HostSystem.writeAll(streams.output, bytes)
                case let .stderr(bytes):
                    try? HostSystem.writeAll(streams.error, bytes)
                case let .exited(exit):
                    guard stage == .running else { throw protocolError("exited before the command started") }
                    record(.exited)
                    if status == nil {
                        switch exit {
                        case let .exited(code): status = .exited(code)
                        case let .signaled(number): status = .signaled(number)
                        }
                    }
                    stage = spec.workspace.isEmpty ? .finished : .receivingWorkspace
                    if limit == nil { idleDeadline = HostSystem.monotonicNanoseconds() + Self.collectIdleLimit }
                case let .filesBegin(root):
                    guard stage == .receivingWorkspace, writer == nil, root == spec.workspace else { throw protocolError("an unexpected workspace transfer of \(root)") }
                    writer = try makeWriter()
                case let .file(header):
                    guard let writer else { throw protocolError("a file outside a transfer") }
                    try transfer { () throws(AgentProtocolError) in try writer.begin(header) }
                case let .fileData(bytes):
                    guard let writer else { throw protocolError("file data outside a transfer") }
                    try transfer { () throws(AgentProtocolError) in try writer.data(bytes) }
                case let .removed(path):
                    guard let writer else { throw protocolError("a removal outside a transfer") }
                    try transfer { () throws(AgentProtocolError) in try writer.remove(path) }
                case .filesEnd:
                    guard let finishing = writer else { throw protocolError("the end of a transfer that did not begin") }
                    try transfer { () throws(AgentProtocolError) in try finishing.finish() }
                    for path in finishing.skipped {
                        try? HostSystem.writeAll(streams.error, Array("hyperctl: not copied back (protected; see --writable-hooks): \(path)\n".utf8))
                    }
                    writer = nil
                    stage = .finished
                case let .failure(text):
                    throw HyperError(.phaseFailed, text)
                case .connectionOpen, .connectionData, .connectionAcknowledge, .connectionClose:
                    guard let egress else { throw protocolError("a proxy connection in a sandbox without network") }
                    egress.bridge.deliver(message)
                case .exec, .stdin, .signal, .resize, .shutdown, .setup:
                    throw protocolError("a host message from the guest")
                }
            }
            if stage == .finished, let status {
                shutDown()
                return status
            }

            // Host input for the command.
            if watchInput, ready.last == true {
                let bytes = (try? HostSystem.readSome(streams.input)) ?? []
                send(.stdin(bytes))
                if bytes.isEmpty { inputOpen = false }
            }

            // The workspace, as fast as the guest takes it.
            if var pending = sender {
                while !pending.isFinished, consoleBacklog() < Self.inputWindow {
                    sendFrames(try pending.nextFrames(budget: 64 * 1024))
                }
                sender = pending
                if pending.isFinished {
                    sender = nil
                    stage = .starting
                    send(.exec(execRequest()))
                }
            }

            if let end = vmEnd.withLock({ $0 }) {
                let how: String
                switch end {
                case let .success(exit): how = describe(exit)
                case let .failure(error): how = error.message
                }
                throw HyperError(.phaseFailed, "the guest stopped before the command finished: \(how)\(consoleTail())")
            }
        }
    }

    private func consoleBacklog() -> Int {
        var count = 0
        let console = self.console
        consoleTransport.perform { _ throws(VirtQueueError) in count = console.pendingCount }
        return count
    }

    private func protocolError(_ what: String) -> HyperError {
        HyperError(.phaseFailed, "the guest agent broke the protocol: \(what)")
    }

    private func transfer(_ body: () throws(AgentProtocolError) -> Void) throws(HyperError) {
        do { try body() } catch { throw HyperError(.phaseFailed, "copying the workspace back: \(error)") }
    }

    /// The writer for the workspace coming back: protected paths stay as they are, and new objects get the
    /// workspace owner's ids when hyperctl runs as root.
    private func makeWriter() throws(HyperError) -> FileTreeWriter {
        let protected = spec.protectsHostExecutedFiles ? [".git/hooks", ".git/config"] : []
        let owner = HostSystem.isRoot ? HostSystem.owner(of: spec.workspace) : nil
        do {
            return try FileTreeWriter(root: spec.workspace, protectedPaths: protected, newObjectOwner: owner)
        } catch {
            throw HyperError(.hostFailure, "\(error)")
        }
    }

    private func execRequest() -> AgentExec {
        let size = spec.tty ? HostSystem.windowSize(streams.input) : nil
        let proxyEnvironment = egress == nil ? [] : EgressProxy.clientEnvironment(url: EgressProxy.sandboxURL)
        return AgentExec(arguments: spec.command, environment: spec.commandEnvironment(adding: proxyEnvironment + secrets.placeholderEnvironment),
                         workingDirectory: spec.workingDirectory ?? (spec.workspace.isEmpty ? "/" : spec.workspace),
                         interactive: spec.interactive, tty: spec.tty, rows: size?.rows ?? 24, columns: size?.columns ?? 80,
                         pidsLimit: UInt32(clamping: spec.limits.pids ?? 0))
    }

    /// Asks the agent to power off, and gives the guest a moment to do so.
    private func shutDown() {
        send(.shutdown)
        let until = HostSystem.monotonicNanoseconds() + Self.shutdownGrace
        while vmEnd.withLock({ $0 }) == nil {
            let now = HostSystem.monotonicNanoseconds()
            guard now < until else { return }
            _ = HostSystem.waitReadable([wake.descriptor], milliseconds: Int32((until - now) / 1_000_000 + 1))
            wake.clear()
        }
    }

    private func describe(_ exit: VMExit) -> String {
        switch exit {
        case .reset: return "it reset (a kernel panic, or the agent gave up)"
        case .powerOff: return "it powered off"
        case .halt: return "it halted"
        case let .shutdown(rip): return "triple fault at RIP 0x\(String(rip, radix: 16))"
        case .timedOut, .stopped: return "it was stopped"
        case let .failure(reason, rip): return "\(reason) at RIP 0x\(String(rip, radix: 16))"
        }
    }

    private func consoleTail() -> String {
        let lines = vm.console.lastLines(12)
        return lines.isEmpty ? "" : "; last console lines:\n  " + lines.joined(separator: "\n  ")
    }
}

/// Puts frames on the control channel from any thread: the transport's `perform` serializes every use of
/// the console's queues.
struct ControlChannelWriter: @unchecked Sendable {
    let console: VirtioConsole
    let transport: VirtioMMIOTransport

    func send(_ frames: [UInt8]) {
        let console = self.console
        transport.perform { rings throws(VirtQueueError) in try console.enqueue(frames, rings: rings) }
    }
}
