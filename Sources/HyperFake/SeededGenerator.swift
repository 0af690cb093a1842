/// A seeded pseudo-random generator (SplitMix64): the same seed gives the same sequence on every host.
///
/// It is for simulation only, never for anything that needs unpredictability.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// Creates a generator from a seed.
    public init(seed: UInt64) { state = seed }

    /// Returns the next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }

    /// Returns a value uniformly spread over `base` ± `spread` (a fraction of `base`), never below 1.
    public mutating func jittered(_ base: UInt64, spread: Double) -> UInt64 {
        let unit = Double(next() >> 11) / Double(UInt64(1) << 53)
        let factor = 1.0 + spread * (2.0 * unit - 1.0)
        return max(1, UInt64(Double(base) * factor))
    }
}
