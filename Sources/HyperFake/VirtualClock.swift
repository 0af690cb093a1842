/// A clock that only moves when the simulation advances it, so simulated timelines are exact and repeatable.
public struct VirtualClock: Sendable, Equatable {
    /// Nanoseconds since the simulation began.
    public private(set) var now: UInt64 = 0

    /// Creates a clock at zero.
    public init() {}

    /// Moves the clock forward, saturating instead of overflowing.
    public mutating func advance(by nanoseconds: UInt64) {
        let (sum, overflow) = now.addingReportingOverflow(nanoseconds)
        now = overflow ? .max : sum
    }

    /// Moves the clock to `instant` if that is later than now.
    public mutating func advance(to instant: UInt64) {
        now = max(now, instant)
    }
}
