import Hyper

/// The simulated time each phase takes: a microVM-like profile with seeded jitter.
///
/// The base figures follow a fast microVM (VMM start, a kernel boot, the guest agent coming up); they are a
/// model for tests and demos, not a measurement.
public struct LatencyModel: Sendable {
    /// Base nanoseconds to reach each phase from the previous one.
    public var baseNanoseconds: [SandboxPhase: UInt64] = [
        .created: 2_500_000,
        .booted: 62_000_000,
        .agentReady: 9_000_000,
        .commandStarted: 400_000,
        .exited: 250_000,
    ]
    /// Jitter as a fraction of the base (0.2 means ±20%).
    public var spread = 0.2

    /// Creates the default model.
    public init() {}

    /// Returns the simulated duration of `phase`, drawn from `generator`.
    public func duration(of phase: SandboxPhase, using generator: inout SeededGenerator) -> UInt64 {
        generator.jittered(baseNanoseconds[phase] ?? 1_000_000, spread: spread)
    }
}
