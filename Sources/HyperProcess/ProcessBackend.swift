#if canImport(Glibc)
import Glibc
#endif
import CHyperJail
import Hyper

/// The `process` backend: the command runs as a host process inside fresh namespaces, with a private read-only
/// root, no capabilities, seccomp-bpf and resource limits. It is the fallback for hosts without
/// hardware-accelerated KVM. See docs/process-backend.md for the threat model.
public struct ProcessBackend: Backend {
    public let name = "process"
    public let isolation = IsolationLevel.namespaces
    private let gatherFacts: @Sendable () -> ProcessHostFacts
    /// The binary re-executed as the `hyper-jail` helper: this very program, whose C constructor becomes the
    /// helper when it sees the helper marker (see Sources/CHyperJail).
    public let helperPath: String

    /// Creates the backend.
    ///
    /// - Parameters:
    ///   - helperPath: the binary to re-execute as the helper; by default this program (`/proc/self/exe`).
    ///   - facts: the host facts; tests pass their own to check verdicts and selection.
    public init(helperPath: String? = nil,
                facts: @escaping @Sendable () -> ProcessHostFacts = { ProcessHostFacts.gather() }) {
        gatherFacts = facts
        _ = chyper_jail_linked()
        self.helperPath = helperPath ?? "/proc/self/exe"
    }

    /// Features enforced here: limits only where a cgroup controller or an rlimit can hold them.
    public var capabilities: Set<SandboxFeature> { Self.capabilities(for: gatherFacts()) }

    static func capabilities(for facts: ProcessHostFacts) -> Set<SandboxFeature> {
        var features: Set<SandboxFeature> = [.mounts, .readOnlyMounts, .memoryLimit, .pidsLimit, .timeout, .interactive, .tty, .customRoot,
                                             .networkAllowlist, .secrets]
        if facts.isRoot, facts.limitControllers.contains("cpu"), facts.cgroupLayout != .absent { features.insert(.cpuLimit) }
        return features
    }

    public func probe() -> ProbeResult { ProcessProbe.evaluate(gatherFacts()) }

    public func launch(_ spec: SandboxSpec, options: LaunchOptions) throws(HyperError) -> any SandboxHandle {
        #if os(Linux)
        return try launchPlanned(spec, options: options) { _ in }.sandbox
        #else
        throw ProcessError.unavailable("namespaces need Linux").hyperError
        #endif
    }

    public func sweepLeftovers() {
        #if os(Linux)
        LeftoverSweep.run()
        #endif
    }

    public func launchSession(_ spec: SandboxSpec, options: LaunchOptions) throws(HyperError) -> any SessionSandbox {
        var sessionSpec = spec
        sessionSpec.interactive = false
        sessionSpec.tty = false
        #if os(Linux)
        let launched = try launchPlanned(sessionSpec, options: options) { config in
            config.argv = []
            config.session = true
        }
        do {
            return try ProcessSession(backend: self, spec: sessionSpec, facts: launched.facts, name: launched.name, secrets: launched.secrets,
                                      hasEgress: launched.hasEgress, sandbox: launched.sandbox)
        } catch {
            try? launched.sandbox.kill()
            _ = try? launched.sandbox.wait()
            throw error
        }
        #else
        throw ProcessError.unavailable("namespaces need Linux").hyperError
        #endif
    }

    #if os(Linux)
    /// Checks the host and the spec, reads the secrets, starts the egress proxy and the helper with the plan
    /// (changed by `adjust`), and returns the running sandbox and what it was planned with.
    func launchPlanned(_ spec: SandboxSpec, options: LaunchOptions, adjust: (inout JailConfig) -> Void) throws(HyperError)
        -> (sandbox: ProcessSandbox, facts: ProcessHostFacts, name: String, secrets: SandboxSecrets, hasEgress: Bool) {
        let facts = gatherFacts()  // Once per launch: the probe, the capabilities and the plan share it.
        let result = ProcessProbe.evaluate(facts)
        guard result.isAvailable else { throw ProcessError.unavailable(result.reason).hyperError }
        try checkSupport(spec, options: options, capabilities: Self.capabilities(for: facts))
        let name = "sandbox-\(HostSystem.processID)-\(HostSystem.monotonicNanoseconds())"
        let secrets = try SandboxSecrets.read(spec)
        let egress = try startEgressProxy(spec, name: name, secrets: secrets, streams: options.streams)
        var config = JailPlanner().plan(spec, facts: facts, sandboxName: name, egressSocket: egress?.proxy.socketPath, secrets: secrets,
                                        hostname: options.hostname)
        adjust(&config)
        let sandbox: ProcessSandbox
        do {
            sandbox = try start(config, streams: options.streams, egress: egress)
        } catch {
            egress?.stop()
            throw error.hyperError
        }
        do {
            try egress?.proxy.start()
        } catch {
            try? sandbox.kill()
            throw error
        }
        return (sandbox, facts, name, secrets, egress != nil)
    }
    #endif

    #if os(Linux)
    /// For an allowlist: the egress proxy listening on a socket in a private folder (not yet serving), logging
    /// each refusal on stderr.
    func startEgressProxy(_ spec: SandboxSpec, name: String, secrets: SandboxSecrets, streams: StandardStreams) throws(HyperError) -> EgressProxyHandle? {
        guard case let .allow(destinations) = spec.network else { return nil }
        let folder = "/tmp/hyperctl-egress-\(name)"
        do {
            try HostSystem.makeDirectory(folder, mode: 0o711)
        } catch {
            throw HyperError(.hostFailure, "egress proxy: \(error)")
        }
        // Its own copy of stderr: the caller may close theirs once the sandbox has started.
        let log = HostSystem.duplicate(streams.error)
        do {
            let proxy = try EgressProxy(policy: EgressPolicy(destinations: destinations), socketPath: folder + "/egress.sock", secrets: secrets,
                                        onDecision: EgressProxy.logDenials(to: log))
            // Its threads start after the helper is spawned, so that hyperctl still forks while single-threaded;
            // connections wait in the listen queue until then.
            return EgressProxyHandle(proxy: proxy, folder: folder, logDescriptor: log)
        } catch {
            HostSystem.closeDescriptor(log)
            HostSystem.removeTree(folder)
            throw error
        }
    }

    /// Spawns the helper with its configuration and returns the handle.
    func start(_ config: JailConfig, streams: StandardStreams, egress: EgressProxyHandle? = nil) throws(ProcessError) -> ProcessSandbox {
        ProcessSystem.ignoreBrokenPipes()
        let launchStart = HostSystem.monotonicNanoseconds()
        let configuration = try ProcessSystem.makePipe()
        let status = try ProcessSystem.makePipe()
        let lifeline = try ProcessSystem.makePipe()
        let helper: pid_t
        do {
            helper = try ProcessSystem.spawn(
                helperPath,
                descriptors: [streams.input, streams.output, streams.error, configuration.read, status.write, lifeline.read])
        } catch {
            [configuration.read, configuration.write, status.read, status.write, lifeline.read, lifeline.write].forEach(ProcessSystem.closeQuietly)
            throw error
        }
        [configuration.read, status.write, lifeline.read].forEach(ProcessSystem.closeQuietly)
        let sandbox = ProcessSandbox(helper: helper, statusReader: status.read, lifeline: lifeline.write,
                                     streams: streams, launchStart: launchStart, egress: egress)
        // A helper that fails early closes its end; its status line then says why.
        try? HostSystem.writeAll(configuration.write, config.encoded())
        ProcessSystem.closeQuietly(configuration.write)
        return sandbox
    }
    #endif
}

/// A sandbox's egress proxy and the private folder its socket lives in.
final class EgressProxyHandle: Sendable {
    let proxy: EgressProxy
    let folder: String
    private let logDescriptor: Locked<Int32>

    init(proxy: EgressProxy, folder: String, logDescriptor: Int32) {
        self.proxy = proxy
        self.folder = folder
        self.logDescriptor = Locked(logDescriptor)
    }

    /// Stops the proxy and removes its folder. Safe to call more than once.
    func stop() {
        proxy.stop()
        if let socket = proxy.socketPath { HostSystem.removeQuietly(socket) }  // A socket, which a tree listing leaves out.
        HostSystem.removeTree(folder)
        logDescriptor.withLock { fd in
            if fd >= 0 { HostSystem.closeDescriptor(fd) }
            fd = -1
        }
    }
}
