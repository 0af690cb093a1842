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
        var features: Set<SandboxFeature> = [.mounts, .readOnlyMounts, .memoryLimit, .pidsLimit, .timeout, .interactive, .tty, .customRoot]
        if facts.isRoot, facts.limitControllers.contains("cpu"), facts.cgroupLayout != .absent { features.insert(.cpuLimit) }
        return features
    }

    public func probe() -> ProbeResult { ProcessProbe.evaluate(gatherFacts()) }

    public func launch(_ spec: SandboxSpec, options: LaunchOptions) throws(HyperError) -> any SandboxHandle {
        let facts = gatherFacts()  // Once per launch: the probe, the capabilities and the plan share it.
        let result = ProcessProbe.evaluate(facts)
        guard result.isAvailable else { throw ProcessError.unavailable(result.reason).hyperError }
        try checkSupport(spec, options: options, capabilities: Self.capabilities(for: facts))
        #if os(Linux)
        let name = "sandbox-\(HostSystem.processID)-\(HostSystem.monotonicNanoseconds())"
        let config = JailPlanner().plan(spec, facts: facts, sandboxName: name)
        do {
            return try start(config, streams: options.streams)
        } catch {
            throw error.hyperError
        }
        #else
        throw ProcessError.unavailable("namespaces need Linux").hyperError
        #endif
    }

    #if os(Linux)
    /// Spawns the helper with its configuration and returns the handle.
    func start(_ config: JailConfig, streams: StandardStreams) throws(ProcessError) -> ProcessSandbox {
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
                                     streams: streams, launchStart: launchStart)
        // A helper that fails early closes its end; its status line then says why.
        try? HostSystem.writeAll(configuration.write, config.encoded())
        ProcessSystem.closeQuietly(configuration.write)
        return sandbox
    }
    #endif
}
