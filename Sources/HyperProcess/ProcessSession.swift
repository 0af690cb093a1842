#if os(Linux)
import Glibc
import Hyper

/// A process-backend session sandbox: the helper keeps a sandbox whose init runs no command (its namespaces,
/// root, cgroups and egress proxy stay up), and each command runs through a joiner, the helper in join mode,
/// which enters that sandbox with the same user, limits and seccomp filter.
final class ProcessSession: SessionSandbox, @unchecked Sendable {
    private let backend: ProcessBackend
    private let spec: SandboxSpec
    private let facts: ProcessHostFacts
    private let name: String
    private let secrets: SandboxSecrets
    private let hasEgress: Bool
    private let sandbox: ProcessSandbox
    private let initPid: Int32
    private let ended: HostEvent
    private let watcher: HostThread
    private let outcome = Locked<SandboxExit?>(nil)

    init(backend: ProcessBackend, spec: SandboxSpec, facts: ProcessHostFacts, name: String, secrets: SandboxSecrets,
         hasEgress: Bool, sandbox: ProcessSandbox) throws(HyperError) {
        self.backend = backend
        self.spec = spec
        self.facts = facts
        self.name = name
        self.secrets = secrets
        self.hasEgress = hasEgress
        self.sandbox = sandbox
        initPid = try sandbox.waitUntilStarted()
        let ended = try HostEvent()
        self.ended = ended
        let outcome = self.outcome
        watcher = try HostThread.start {
            let exit = try? sandbox.wait()
            outcome.withLock { $0 = exit }
            ended.signal()
        }
    }

    deinit {
        try? sandbox.kill()
        watcher.join()
    }

    func exec(_ command: SessionCommand, streams: StandardStreams) throws(HyperError) -> any SandboxHandle {
        guard !hasEnded else { throw HyperError(.phaseFailed, "sandbox \(name) has ended") }
        let commandSpec = command.applied(to: spec)
        var config = JailPlanner().plan(commandSpec, facts: facts, sandboxName: name,
                                        egressSocket: hasEgress ? JailPlanner.egressSocketInside : nil, secrets: secrets)
        // The joiner only joins: no new cgroups, limits or kills of its own, no time limit of its own.
        var cgroups = CgroupPlan()
        cgroups.procsFiles = config.cgroups.procsFiles
        config.cgroups = cgroups
        config.timeoutMilliseconds = nil
        config.joinPid = initPid
        do {
            return try backend.start(config, streams: streams)
        } catch {
            throw error.hyperError
        }
    }

    private var hasEnded: Bool { HostSystem.waitReadable([ended.descriptor], milliseconds: 0) == [true] }

    func stop(grace: Duration) {
        try? sandbox.signal(SIGTERM)
        let milliseconds = Int32(clamping: grace.components.seconds * 1000 + grace.components.attoseconds / 1_000_000_000_000_000)
        if HostSystem.waitReadable([ended.descriptor], milliseconds: milliseconds) != [true] {
            try? sandbox.kill()
        }
        waitUntilEnded()
    }

    func waitUntilEnded() {
        while HostSystem.waitReadable([ended.descriptor], milliseconds: -1) != [true] {}
    }

    var hasTimedOut: Bool { outcome.value == .timedOut }

    /// The resident memory of every process in the sandbox's pid namespace.
    var memoryInUse: UInt64? {
        guard let namespace = HostSystem.symbolicLinkTarget("/proc/\(initPid)/ns/pid") else { return nil }
        var total: UInt64 = 0
        for entry in HostSystem.directoryNames("/proc") where entry.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) {
            guard HostSystem.symbolicLinkTarget("/proc/\(entry)/ns/pid") == namespace,
                  let status = HostSystem.readText("/proc/\(entry)/status"),
                  let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
                  let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ UInt64($0) }) else { continue }
            total += kilobytes * 1024
        }
        return total
    }
}
#endif
