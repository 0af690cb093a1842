import Hyper

/// The deterministic simulation backend: a seeded microVM-like timeline on a virtual clock, with fault injection.
///
/// It runs no host process and isolates nothing, which its isolation level says; `auto` never picks it.
/// The same seed and spec always give the same timeline, output and report.
public struct FakeBackend: Backend {
    public let name = "fake"
    public let isolation = IsolationLevel.simulated
    public let capabilities: Set<SandboxFeature> = [
        .mounts, .readOnlyMounts, .memoryLimit, .cpuLimit, .pidsLimit, .timeout, .interactive, .faultInjection,
    ]
    /// The latency model the simulation draws phase durations from.
    public var latency: LatencyModel

    /// Creates the backend with the default latency model.
    public init(latency: LatencyModel = LatencyModel()) { self.latency = latency }

    public func probe() -> ProbeResult {
        ProbeResult(isAvailable: true, reasons: ["simulation: runs no host process; deterministic for a given seed"])
    }

    public func launch(_ spec: SandboxSpec, options: LaunchOptions) throws(HyperError) -> any SandboxHandle {
        try checkSupport(spec, options: options)
        return FakeSandbox(spec: spec, options: options, latency: latency)
    }
}
