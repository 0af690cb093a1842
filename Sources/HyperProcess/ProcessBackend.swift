import Hyper

/// The `process` backend: the command runs as a host process inside fresh namespaces, with a private root,
/// seccomp-bpf and resource limits. It is the fallback for hosts without hardware-accelerated KVM.
public struct ProcessBackend: Backend {
    public let name = "process"
    public let isolation = IsolationLevel.namespaces
    public let capabilities: Set<SandboxFeature> = []
    private let gatherFacts: @Sendable () -> ProcessHostFacts

    /// Creates the backend. Tests pass their own facts to check probe verdicts and selection.
    public init(facts: @escaping @Sendable () -> ProcessHostFacts = { ProcessHostFacts.gather() }) {
        gatherFacts = facts
    }

    public func probe() -> ProbeResult { ProcessProbe.evaluate(gatherFacts()) }

    public func launch(_ spec: SandboxSpec, options: LaunchOptions) throws(HyperError) -> any SandboxHandle {
        let result = probe()
        guard result.isAvailable else { throw ProcessError.unavailable(result.reason).hyperError }
        try checkSupport(spec, options: options)
        throw ProcessError.notImplemented("launching namespace sandboxes").hyperError
    }
}
