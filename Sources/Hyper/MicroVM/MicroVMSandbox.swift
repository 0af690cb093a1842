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
    /// Whether this is a session sandbox (commands come through `execute`) rather than a one-shot run.
    private let isSession: Bool
    /// Signalled when a session can take commands, and when the session thread has ended.
    private let ready: HostEvent
    private let ended: HostEvent
    private let requests = Locked<[Request]>([])
    /// Commands sent to the guest that have not ended, to fail them if the sandbox ends first.
    private let liveCommands = Locked<[UInt32: GuestCommand]>([:])
    private let nextCommand = Locked<UInt32>(2)
    /// The id of a one-shot sandbox's command.
    static let oneShotCommand: UInt32 = 1
    /// For a network allowlist: the egress proxy, and the bridge that carries the guest's connections to it.
    private let egress: (proxy: EgressProxy, bridge: GuestEgressBridge, log: Int32)?
    /// The guest's hostname, and where its fresh entropy comes from (see `identity`).
    private let hostname: String
    private let random: HostRandom

    /// How a sandbox's machine comes to be: booted from a guest kit (and saved at agent-ready for later
    /// sandboxes, with a plan), or restored from a snapshot.
    public enum Origin: Sendable {
        case boot(GuestKit, saving: BootSnapshotPlan? = nil)
        case snapshot(SandboxSnapshot)
    }

    /// The scratch disk of a Docker-flavour sandbox (copied into its snapshots), and the image it shares.
    private let scratch: FileBlockStorage?
    private let dockerImage: (path: String, size: UInt64)?
    /// Whether the sandbox has user disks (a snapshot of it is refused).
    private let hasUserDisks: Bool
    /// The snapshot this sandbox was restored from, if it was.
    private let restoredFrom: SandboxSnapshot?
    /// Where this cold boot saves its machine at agent-ready, if it does (the default start path).
    private let bootSnapshotPlan: BootSnapshotPlan?

    /// The guest kernel's command line for a spec: `kernelCommandLine`, plus the Docker flavour's words.
    public static func kernelCommandLine(for spec: SandboxSpec) -> String {
        guard spec.docker else { return kernelCommandLine }
        let proxied = if case .allow = spec.network { true } else { false }
        return kernelCommandLine + DockerFlavour.commandLineWords(proxyPort: proxied ? EgressProxy.sandboxPort : nil)
    }

    /// The machine a spec asks for: its memory (default `defaultMemory`) and whole vCPUs (at least one).
    public static func machineSize(for spec: SandboxSpec) -> (memoryBytes: UInt64, vcpus: Int) {
        (spec.limits.memoryBytes ?? defaultMemory, max(1, Int((spec.limits.cpus ?? 1).rounded(.up))))
    }

    /// Builds and starts the microVM for `spec` on `hypervisor`.
    /// - Parameters:
    ///   - origin: boot a guest kit, or restore a snapshot (whose machine size and flavour the spec must have;
    ///     the guest is then at agent-ready at once, and gets its identity, setup and workspace as a booted one).
    ///   - signals: signals to relay to the command (hyperctl's own), when given.
    ///   - isSession: a session sandbox: no command of its own; commands come through `execute` until `requestStop`.
    public init(spec: SandboxSpec, options: LaunchOptions, origin: Origin, hypervisor: any Hypervisor, signals: (any SignalRelay)? = nil,
                bootTimeout: Duration = defaultBootTimeout, isSession: Bool = false) throws(HyperError) {
        launchTime = HostSystem.monotonicNanoseconds()
        self.isSession = isSession
        ready = try HostEvent()
        ended = try HostEvent()
        self.signals = signals
        self.spec = spec
        self.bootTimeout = bootTimeout
        streams = options.streams
        let (memory, vcpus) = Self.machineSize(for: spec)
        guard memory >= 128 << 20 else {
            throw HyperError(.invalidSpec, "memory: a microVM sandbox needs at least 128 MiB (its kernel and agent live there too); \(Units.formatSize(memory)) was asked")
        }
        if case let .snapshot(snapshot) = origin {
            guard snapshot.memoryBytes == memory, snapshot.vcpus == vcpus, snapshot.isDocker == spec.docker else {
                throw HyperError(.invalidSpec, "--from-snapshot: the snapshot is of a \(Units.formatSize(snapshot.memoryBytes)), \(snapshot.vcpus)-vCPU\(snapshot.isDocker ? " Docker" : "") sandbox; this one asks for \(Units.formatSize(memory)) and \(vcpus)\(spec.docker ? " with Docker" : "")")
            }
            guard options.disks.isEmpty else { throw HyperError(.invalidArgument, "--disk cannot be added to a restored sandbox") }
        }
        hasUserDisks = !options.disks.isEmpty

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
        hostname = options.hostname ?? LaunchOptions.defaultHostname
        self.random = random
        var consoleMirror: Int32?
        if let path = options.guestConsolePath {
            do { consoleMirror = try HostSystem.createFile(path) } catch { throw HyperError(.invalidArgument, "--guest-console: \(error)") }
        }
        var devices: [any VirtioDevice] = [console, entropy]
        switch origin {
        case let .boot(kit, plan):
            if spec.docker {
                let image = DockerFlavour.defaultImagePath()
                let disks = try DockerFlavour.disks(imagePath: image)
                devices += disks.devices
                scratch = disks.scratch
                dockerImage = (image, disks.devices[0].sectors * 512)
            } else {
                scratch = nil
                dockerImage = nil
            }
            for (index, disk) in options.disks.enumerated() {
                let storage = try FileBlockStorage(path: disk.path, writable: !disk.readOnly)
                devices.append(VirtioBlock(storage: storage, readOnly: disk.readOnly, identifier: "hyperctl-disk\(index)"))
            }
            let configuration = MicroVM.Configuration(kernel: try GuestLoader.readImage(kit.kernelPath, what: "kernel"), kernelName: kit.kernelPath,
                                                      initrd: try GuestLoader.readImage(kit.initrdPath, what: "initrd"),
                                                      commandLine: Self.kernelCommandLine(for: spec),
                                                      memoryBytes: memory, vcpus: vcpus)
            vm = try MicroVM(configuration, devices: devices, console: ConsoleLog(mirror: consoleMirror), on: hypervisor)
            restoredFrom = nil
            bootSnapshotPlan = plan
        case let .snapshot(snapshot):
            if let image = snapshot.dockerImage {
                let disks = try DockerFlavour.disks(imagePath: image, scratchContents: snapshot.folder + "/" + SandboxSnapshot.scratchFile)
                guard disks.devices[0].sectors * 512 == snapshot.dockerImageBytes else {
                    throw HyperError(.invalidArgument, "--from-snapshot: the snapshot's Docker image \(image) has changed size")
                }
                devices += disks.devices
                scratch = disks.scratch
                dockerImage = (image, snapshot.dockerImageBytes)
            } else {
                scratch = nil
                dockerImage = nil
            }
            let machine = try MachineSnapshot.read(from: snapshot.folder)
            vm = try MicroVM(restoring: machine, memory: try MachineSnapshot.mapMemory(from: snapshot.folder, snapshot: machine), devices: devices,
                             console: ConsoleLog(mirror: consoleMirror), on: hypervisor)
            restoredFrom = snapshot
            bootSnapshotPlan = nil
        }
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
                let reason: HyperError
                if case let .failure(error) = result { reason = error } else { reason = HyperError(.phaseFailed, "the sandbox ended") }
                outcome.withLock { $0 = result }
                ended.signal()
                // Commands still running, and those asked for too late, end with the sandbox.
                for command in liveCommands.withLock({ held in defer { held = [:] }; return Array(held.values) }) { command.finish(.failure(reason)) }
                failPendingCommands(reason)
            }
        } catch {
            vm.stop()
            stopEgress()
            ended.signal()
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
        while HostSystem.waitReadable([ended.descriptor], milliseconds: -1) != [true] {}
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

    /// One-shot: relays the signal to the command once it runs; before that the sandbox ends.
    public func signal(_ number: Int32) throws(HyperError) {
        guard agentReady.load(ordering: .sequentiallyConsistent) else {
            try kill()
            return
        }
        deliver(.signal(Self.oneShotCommand, number))
    }

    public func kill() throws(HyperError) {
        killRequested.store(true, ordering: .sequentiallyConsistent)
        wake.signal()
    }

    /// What other threads ask of the session thread, in order.
    enum Request: Sendable {
        case exec(GuestCommand)
        case signal(UInt32, Int32)
        case resize(UInt32, rows: UInt16, columns: UInt16)
        case stop(Duration)
        case snapshot(SnapshotRequest)
    }

    /// A snapshot asked of a session: the folder to write, and the answer.
    final class SnapshotRequest: Sendable {
        let folder: String
        private let result = Locked<Result<Void, HyperError>?>(nil)
        private let done: HostEvent

        init(folder: String) throws(HyperError) {
            self.folder = folder
            done = try HostEvent()
        }

        func finish(_ outcome: Result<Void, HyperError>) {
            result.withLock { $0 = $0 ?? outcome }
            done.signal()
        }

        /// Waits for the answer, or for `ended` (the sandbox ended first).
        func wait(orEnd ended: HostEvent) throws(HyperError) {
            while HostSystem.waitReadable([done.descriptor, ended.descriptor], milliseconds: -1).allSatisfy({ !$0 }) {}
            guard let outcome = result.withLock({ $0 }) else { throw HyperError(.phaseFailed, "the sandbox ended before its snapshot was taken") }
            _ = try outcome.get()
        }
    }

    func deliver(_ request: Request) {
        requests.withLock { $0.append(request) }
        wake.signal()
        // The session thread takes no more requests once the sandbox has ended.
        if hasEnded {
            failPendingCommands(HyperError(.phaseFailed, "the sandbox has ended"))
        }
    }

    private func failPendingCommands(_ reason: HyperError) {
        for request in requests.withLock({ list in defer { list = [] }; return list }) {
            if case let .exec(command) = request { command.finish(.failure(reason)) }
            if case let .snapshot(snapshot) = request { snapshot.finish(.failure(reason)) }
        }
    }

    /// Whether the session thread has ended (`wait` then returns at once).
    var hasEnded: Bool { HostSystem.waitReadable([ended.descriptor], milliseconds: 0) == [true] }

    /// Session mode: waits until the guest has the workspace and can run commands.
    public func waitUntilReady() throws(HyperError) {
        while HostSystem.waitReadable([ready.descriptor, ended.descriptor], milliseconds: -1).allSatisfy({ !$0 }) {}
        if HostSystem.waitReadable([ready.descriptor], milliseconds: 0) == [true] { return }
        _ = try wait()
        throw HyperError(.phaseFailed, "the sandbox ended before it was ready")
    }

    /// Session mode: starts a command in the guest; the handle waits for it, signals or kills it.
    public func execute(_ command: SessionCommand, streams: StandardStreams) throws(HyperError) -> any SandboxHandle {
        let id = nextCommand.withLock { next in
            defer { next += 1 }
            return next
        }
        let size = command.tty ? HostSystem.windowSize(streams.input) : nil
        let guestCommand = try GuestCommand(id: id, streams: streams, request: execRequest(id: id, spec: command.applied(to: spec), size: size),
                                            deliver: { [weak self] request in self?.deliver(request) })
        deliver(.exec(guestCommand))
        return guestCommand
    }

    /// Session mode: SIGTERM to every command, SIGKILL after `grace`, the workspace back, then power off.
    public func requestStop(grace: Duration) { deliver(.stop(grace)) }

    /// Session mode: pauses the machine while no command runs, writes it to `folder` (which must not
    /// exist), and resumes it. See docs/snapshots.md.
    public func snapshot(to folder: String) throws(HyperError) {
        let request = try SnapshotRequest(folder: folder)
        deliver(.snapshot(request))
        try request.wait(orEnd: ended)
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
    private enum Stage: Comparable {
        case booting, sendingWorkspace, startingDaemon, serving, returningWorkspace, finished
    }

    /// A command the session thread runs, and its host-side stream state.
    private struct Running {
        var command: GuestCommand
        var inputOpen: Bool
        var started = false
    }

    /// The host side of the guest session. One-shot: returns how the command ended. Session: returns
    /// `exited(0)` once stopped.
    private func runSession() throws(HyperError) -> SandboxExit {
        var decoder = FrameDecoder()
        var stage = Stage.booting
        var sender: WorkspaceSender?
        var writer: FileTreeWriter?
        var running: [UInt32: Running] = [:]
        /// One-shot: how the command ended. Session: that it was stopped.
        var status: SandboxExit?
        var stopping = false
        var timedOut = false
        var stopDeadline: UInt64?
        let limit = spec.limits.timeout
        let bootDeadline = launchTime + UInt64(max(0, (limit ?? bootTimeout).nanoseconds))
        let deadline = limit.map { launchTime + UInt64(max(0, $0.nanoseconds)) }
        var collectDeadline: UInt64?
        var idleDeadline: UInt64?
        /// The Docker flavour's daemon has not said it is ready yet; commands wait for it.
        var daemonPending = spec.docker && restoredFrom == nil
        var kernelEntry = launchTime
        /// A Docker-flavour boot that saves the boot snapshot: when its agent said `ready`. The host tells the
        /// guest nothing until the daemon is ready too and the machine is saved.
        var readyBeforeDaemon: UInt64?

        /// The agent answers (it said `ready`, or its machine was restored): it gets its identity and the
        /// sandbox's setup, then the workspace.
        func agentIsReady(at arrival: UInt64) throws(HyperError) {
            record(.agentReady, at: arrival)
            agentReady.store(true, ordering: .sequentiallyConsistent)
            send(.identity(AgentIdentity(hostname: hostname, seed: random.bytes(32), realtimeNanoseconds: HostSystem.realtimeNanoseconds())))
            if egress != nil || !secrets.entries.isEmpty {
                send(.setup(AgentSandboxSetup(proxyPort: egress == nil ? 0 : EgressProxy.sandboxPort,
                                              secretFiles: secrets.entries.map { ($0.name, $0.visibleValue) })))
            }
            if spec.workspace.isEmpty {
                try workspaceDelivered()
            } else {
                stage = .sendingWorkspace
                sender = try WorkspaceSender(root: spec.workspace)
            }
        }

        /// The guest has the workspace: commands run once the daemon (if any) is ready too.
        func workspaceDelivered() throws(HyperError) {
            guard !daemonPending else {
                stage = .startingDaemon
                return
            }
            stage = .serving
            try beginServing()
        }

        func beginStop(_ signal: Int32) {
            stopping = true
            for id in running.keys { send(.signal(id, signal)) }
        }

        if let restoredFrom {
            // A restored machine's agent is past `ready` already: it is told who it is now, at once.
            let now = HostSystem.monotonicNanoseconds()
            record(.booted, at: now)
            details.withLock {
                $0.append(("start", .string("snapshot")))
                $0.append(("snapshot", .string(restoredFrom.folder)))
            }
            try agentIsReady(at: now)
        }

        while true {
            let now = HostSystem.monotonicNanoseconds()
            if killRequested.load(ordering: .sequentiallyConsistent) { return .signaled(9) }
            // Deadlines: the boot, the time limit, and the grace for copying back after it.
            if stage < .serving, now >= bootDeadline, limit == nil {
                throw HyperError(.phaseFailed, "the guest agent was not ready after \(Units.formatDuration(bootTimeout))\(consoleTail())")
            }
            if let deadline, now >= deadline, !timedOut {
                timedOut = true
                status = .timedOut
                guard stage == .serving || stage == .returningWorkspace, !spec.workspace.isEmpty else { return .timedOut }
                beginStop(9)
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

            // Requests from other threads: commands, their signals, a stop.
            for request in requests.withLock({ list in defer { list = [] }; return list }) {
                switch request {
                case let .exec(command):
                    guard stage == .serving, !stopping else {
                        command.finish(.failure(HyperError(.phaseFailed, "the sandbox is \(stopping ? "stopping" : "not ready")")))
                        continue
                    }
                    running[command.id] = Running(command: command, inputOpen: command.request.interactive)
                    liveCommands.withLock { $0[command.id] = command }
                    send(.exec(command.request))
                case let .signal(id, number):
                    if running[id] != nil { send(.signal(id, number)) }
                case let .resize(id, rows, columns):
                    if running[id] != nil { send(.resize(id, rows: rows, columns: columns)) }
                case let .stop(grace):
                    guard !stopping else { continue }
                    status = status ?? .exited(0)
                    beginStop(15)
                    stopDeadline = now + UInt64(max(0, grace.nanoseconds))
                case let .snapshot(request):
                    do throws(HyperError) {
                        guard stage == .serving, !stopping, !daemonPending else { throw HyperError(.phaseFailed, "snapshot: the sandbox is not ready, or is stopping") }
                        guard running.isEmpty else { throw HyperError(.phaseFailed, "snapshot: \(running.count) command(s) still run; a snapshot is taken between commands") }
                        guard decoder.pendingCount == 0, consoleBacklog() == 0, inbox.withLock({ $0.isEmpty }) else {
                            throw HyperError(.phaseFailed, "snapshot: the guest channel is busy; try again")
                        }
                        try writeSnapshot(to: request.folder)
                        request.finish(.success(()))
                    } catch {
                        request.finish(.failure(error))
                    }
                }
            }
            if let due = stopDeadline, now >= due {
                for id in running.keys { send(.signal(id, 9)) }
                stopDeadline = nil
            }

            let until = [deadline, collectDeadline, idleDeadline, stopDeadline, limit == nil && stage < .serving ? bootDeadline : nil].compactMap { $0 }.min()
            let milliseconds = until.map { Int32(clamping: ($0 > now ? $0 - now : 0) / 1_000_000 + 1) } ?? -1
            // Each command's stdin is read only while the guest keeps up with it.
            var inputs = running.values.filter { $0.inputOpen && $0.started }.map { ($0.command.id, $0.command.streams.input) }
            if !inputs.isEmpty, consoleBacklog() >= Self.inputWindow { inputs = [] }
            var watched = [wake.descriptor]
            if let signals { watched.append(signals.descriptor) }
            watched += inputs.map(\.1)
            let ready = HostSystem.waitReadable(watched, milliseconds: milliseconds)
            wake.clear()

            // One-shot: signals to hyperctl go to the command; before it runs, the ending ones end the sandbox.
            for number in signals?.take() ?? [] {
                if let command = running[Self.oneShotCommand], command.started {
                    try? command.command.signal(number)
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
                    kernelEntry = max(launchTime, arrival > report.readyNanoseconds ? arrival - report.readyNanoseconds : launchTime)
                    record(.booted, at: kernelEntry)
                    details.withLock {
                        $0.append(("start", .string("cold-boot")))
                        $0.append(("guestKernel", .string(report.kernelRelease)))
                        $0.append(("guestAgentStartNanoseconds", .string(String(report.agentStartNanoseconds))))
                        $0.append(("guestReadyNanoseconds", .string(String(report.readyNanoseconds))))
                    }
                    if bootSnapshotPlan != nil, spec.docker {
                        readyBeforeDaemon = arrival
                    } else {
                        if let bootSnapshotPlan { saveBootSnapshot(bootSnapshotPlan) }
                        try agentIsReady(at: arrival)
                    }
                case let .started(id, pid):
                    guard var entry = running[id], !entry.started else { throw protocolError("started for command \(id), which was not asked for") }
                    entry.started = true
                    running[id] = entry
                    entry.command.record(.commandStarted)
                    if id == Self.oneShotCommand, !isSession {
                        record(.commandStarted)
                        details.withLock { $0.append(("guestPid", .integer(pid))) }
                    }
                case let .stdout(id, bytes):
                    guard let entry = running[id] else { throw protocolError("output of command \(id), which does not run") }
                    try? HostSystem.writeAll(entry.command.streams.output, bytes)
                case let .stderr(id, bytes):
                    guard let entry = running[id] else { throw protocolError("output of command \(id), which does not run") }
                    try? HostSystem.writeAll(entry.command.streams.error, bytes)
                case let .exited(id, exit):
                    guard let entry = running.removeValue(forKey: id), entry.started else { throw protocolError("exited for command \(id), which did not start") }
                    liveCommands.withLock { $0[id] = nil }
                    var ending: SandboxExit
                    switch exit {
                    case let .exited(code): ending = .exited(code)
                    case let .signaled(number): ending = .signaled(number)
                    }
                    if timedOut { ending = .timedOut }
                    entry.command.finish(.success(ending))
                    if id == Self.oneShotCommand, !isSession {
                        record(.exited)
                        status = status ?? ending
                    }
                case let .filesBegin(root):
                    guard stage == .returningWorkspace, writer == nil, root == spec.workspace else { throw protocolError("an unexpected workspace transfer of \(root)") }
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
                case let .daemonReady(report):
                    guard daemonPending, stage >= .sendingWorkspace || readyBeforeDaemon != nil else { throw protocolError("an unexpected daemon-ready message") }
                    daemonPending = false
                    // Guest uptimes on the host's timeline: the kernel's entry plus the uptime.
                    let milliseconds = { (uptime: UInt64) in JSONValue.number(Double((kernelEntry + uptime) - self.launchTime) / 1e6) }
                    details.withLock {
                        $0.append(("docker", .object([("daemon", .string(report.name)),
                                                      ("daemonStartMilliseconds", milliseconds(report.startNanoseconds)),
                                                      ("daemonReadyMilliseconds", milliseconds(report.readyNanoseconds))])))
                    }
                    if let arrival = readyBeforeDaemon, let bootSnapshotPlan {
                        // The Docker flavour's boot snapshot: the daemon is up, the guest still knows nothing of its own.
                        readyBeforeDaemon = nil
                        saveBootSnapshot(bootSnapshotPlan)
                        try agentIsReady(at: arrival)
                    } else if stage == .startingDaemon {
                        stage = .serving
                        try beginServing()
                    }
                case let .failure(text):
                    throw HyperError(.phaseFailed, text)
                case .connectionOpen, .connectionData, .connectionAcknowledge, .connectionClose:
                    guard let egress else { throw protocolError("a proxy connection in a sandbox without network") }
                    egress.bridge.deliver(message)
                case .exec, .stdin, .signal, .resize, .shutdown, .setup, .returnWorkspace, .identity:
                    throw protocolError("a host message from the guest")
                }
            }

            // The end: one-shot once its command ended, a session once stopped and its commands ended; the
            // workspace comes back first.
            if stage == .serving, running.isEmpty, status != nil, !isSession || stopping {
                if spec.workspace.isEmpty {
                    stage = .finished
                } else {
                    stage = .returningWorkspace
                    send(.returnWorkspace)
                    if limit == nil { idleDeadline = HostSystem.monotonicNanoseconds() + Self.collectIdleLimit }
                }
            }
            if stage == .finished, let status {
                shutDown()
                return status
            }

            // Host input for the commands that take it.
            for (index, input) in inputs.enumerated() where ready[watched.count - inputs.count + index] {
                let bytes = (try? HostSystem.readSome(input.1)) ?? []
                send(.stdin(input.0, bytes))
                if bytes.isEmpty { running[input.0]?.inputOpen = false }
            }

            // The workspace, as fast as the guest takes it.
            if var pending = sender {
                while !pending.isFinished, consoleBacklog() < Self.inputWindow {
                    sendFrames(try pending.nextFrames(budget: 64 * 1024))
                }
                sender = pending
                if pending.isFinished {
                    sender = nil
                    try workspaceDelivered()
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

    /// Pauses the machine, writes it and the sandbox's description (and the Docker flavour's scratch disk)
    /// to `folder`, and resumes it. What a clone would share with this sandbox's host side is refused.
    private func writeSnapshot(to folder: String) throws(HyperError) {
        guard egress == nil, secrets.entries.isEmpty else {
            throw HyperError(.unsupportedFeature, "snapshot: a sandbox with a network allowlist or secrets cannot be snapshotted (its clones would carry its proxy state and secrets)")
        }
        guard !hasUserDisks else { throw HyperError(.unsupportedFeature, "snapshot: a sandbox with --disk cannot be snapshotted (its clones would share the disk)") }
        guard HostSystem.fileKind(at: folder) == nil else { throw HyperError(.invalidArgument, "snapshot: \(folder) exists already") }
        try writeMachine(to: folder)
    }

    /// The default start path's first step: the guest has said `ready` (the Docker flavour: and its daemon is
    /// ready) and has been told nothing of its own yet (no identity, setup, secrets or workspace), so its
    /// machine is what every later sandbox of this kind starts from. It is written to a staging folder and
    /// named at once; a failure costs only speed.
    private func saveBootSnapshot(_ plan: BootSnapshotPlan) {
        let started = HostSystem.monotonicNanoseconds()
        do throws(HyperError) {
            let staging = try plan.cache.makeStagingFolder(for: plan.folder)
            try writeMachine(to: staging)
            try plan.cache.publish(staging, as: plan.folder, sources: plan.sources)
            var facts: [(String, JSONValue)] = [("saved", .string(plan.folder)),
                                                ("milliseconds", .number(Double(HostSystem.monotonicNanoseconds() - started) / 1e6))]
            if let replacing = plan.replacing { facts.append(("replaced", .string(replacing))) }
            details.withLock { $0.append(("bootSnapshot", .object(facts))) }
        } catch {
            details.withLock { $0.append(("bootSnapshot", .object([("failed", .string(error.message))]))) }
            try? HostSystem.writeAll(streams.error, Array("hyperctl: the boot snapshot was not saved (later sandboxes boot cold too): \(error.message)\n".utf8))
        }
    }

    /// Pauses the machine, writes it (and the sandbox's description and scratch disk) to `folder`, and
    /// resumes it. Interrupts a device raised and the guest has not handled yet are part of the saved state
    /// (the lines are edge-triggered: see docs/snapshots.md); what the guest sent that the host has not read
    /// is not, so then the snapshot is refused.
    private func writeMachine(to folder: String) throws(HyperError) {
        try vm.pause()
        guard inbox.withLock({ $0.isEmpty }) else {
            try vm.resume()
            throw HyperError(.phaseFailed, "snapshot: the guest channel is busy; try again")
        }
        do throws(HyperError) {
            try vm.captureSnapshot().write(to: folder, memory: vm.memory)
            if let scratch {
                let copy: Int32
                do { copy = try HostSystem.createFile(folder + "/" + SandboxSnapshot.scratchFile) } catch { throw HyperError(.hostFailure, "snapshot: \(error)") }
                defer { HostSystem.closeDescriptor(copy) }
                do {
                    try HostSystem.setFileSize(copy, scratch.size)
                    try HostSystem.copyData(from: scratch.descriptor, to: copy, size: scratch.size)
                } catch {
                    throw HyperError(.hostFailure, "snapshot: the scratch disk: \(error)")
                }
            }
            let size = Self.machineSize(for: spec)
            try SandboxSnapshot(memoryBytes: size.memoryBytes, vcpus: size.vcpus, dockerImage: dockerImage?.path, dockerImageBytes: dockerImage?.size ?? 0,
                                folder: folder).writeDescription()
        } catch {
            HostSystem.removeTree(folder)
            try? vm.resume()
            throw error
        }
        try vm.resume()
    }

    /// The guest can run commands: a one-shot sandbox starts its command, a session says it is ready.
    private func beginServing() throws(HyperError) {
        if isSession {
            ready.signal()
            return
        }
        let size = spec.tty ? HostSystem.windowSize(streams.input) : nil
        let command = try GuestCommand(id: Self.oneShotCommand, streams: streams, request: execRequest(id: Self.oneShotCommand, spec: spec, size: size),
                                       deliver: { [weak self] request in self?.deliver(request) })
        deliver(.exec(command))
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

    /// The agent's request for `spec`'s command under `id`, with the proxy's and the secrets' environment.
    private func execRequest(id: UInt32, spec: SandboxSpec, size: (rows: UInt16, columns: UInt16)?) -> AgentExec {
        let proxyEnvironment = egress == nil ? [] : EgressProxy.clientEnvironment(url: EgressProxy.sandboxURL)
        return AgentExec(id: id, arguments: spec.command, environment: spec.commandEnvironment(adding: proxyEnvironment + secrets.placeholderEnvironment),
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
