/// Parsing and printing of the human units that specs and flags use: sizes (`64M`) and durations (`30s`).
public enum Units {
    /// Parses a size such as `4096`, `64K`, `64M`, `2G`, `1T` (binary multiples; an optional `i`/`iB`/`B` is accepted).
    ///
    /// - Returns: the size in bytes, or nil when the text is not a positive size.
    public static func parseSize(_ text: String) -> UInt64? {
        var body = Substring(text.trimmingSpaces())
        guard !body.isEmpty else { return nil }
        let lower = body.lowercased()
        for suffix in ["ib", "b"] where lower.hasSuffix(suffix) && lower.count > suffix.count {
            let candidate = body.dropLast(suffix.count)
            if let last = candidate.last, "kmgtKMGT".contains(last) || suffix == "b" {
                body = candidate
                break
            }
        }
        var shift: UInt64 = 0
        if let last = body.last?.lowercased() {
            switch last {
            case "k": shift = 10
            case "m": shift = 20
            case "g": shift = 30
            case "t": shift = 40
            default: break
            }
            if shift > 0 { body = body.dropLast() }
        }
        guard !body.isEmpty, body.allSatisfy({ $0.isASCII && $0.isNumber }), let number = UInt64(body), number > 0 else {
            return nil
        }
        let (product, overflow) = number.multipliedReportingOverflow(by: UInt64(1) << shift)
        return overflow ? nil : product
    }

    /// Parses a duration such as `500ms`, `30s`, `1.5s`, `5m` or `2h`. A bare number means seconds.
    ///
    /// - Returns: the duration, or nil when the text is not a positive duration.
    public static func parseDuration(_ text: String) -> Duration? {
        let body = text.trimmingSpaces()
        let units: [(String, Double)] = [("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9), ("s", 1), ("m", 60), ("h", 3600)]
        var numberText = Substring(body)
        var scale = 1.0
        for (suffix, factor) in units where body.hasSuffix(suffix) {
            numberText = body.dropLast(suffix.count)
            scale = factor
            break
        }
        guard !numberText.isEmpty,
              numberText.allSatisfy({ ($0.isASCII && $0.isNumber) || $0 == "." }),
              let value = Double(numberText), value.isFinite, value > 0
        else { return nil }
        let nanoseconds = value * scale * 1e9
        guard nanoseconds >= 1, nanoseconds < 1e18 else { return nil }
        return .nanoseconds(Int64(nanoseconds))
    }

    /// Returns a size in the largest binary unit that divides it exactly (`64M`, `1536K`).
    public static func formatSize(_ bytes: UInt64) -> String {
        for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] where bytes % (UInt64(1) << shift) == 0 {
            return "\(bytes >> UInt64(shift))\(suffix)"
        }
        return "\(bytes)"
    }

    /// Returns a size rounded for people to read (`512B`, `3.5K`, `48.2M`, `1.1G`): one decimal in the
    /// largest unit that keeps the number at 1 or above. Not for parsing back; `formatSize` is exact.
    public static func formatRoundedSize(_ bytes: UInt64) -> String {
        for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] where bytes >= UInt64(1) << shift {
            let tenths = (bytes * 10 + (UInt64(1) << (shift - 1))) >> UInt64(shift)
            return "\(tenths / 10).\(tenths % 10)\(suffix)"
        }
        return "\(bytes)B"
    }

    /// Returns a duration in the most natural unit (`500ms`, `30s`, `5m`).
    public static func formatDuration(_ duration: Duration) -> String {
        let nanoseconds = duration.nanoseconds
        for (unit, suffix) in [(Int64(3_600_000_000_000), "h"), (60_000_000_000, "m"), (1_000_000_000, "s"), (1_000_000, "ms")]
        where nanoseconds % unit == 0 {
            return "\(nanoseconds / unit)\(suffix)"
        }
        return "\(nanoseconds)ns"
    }
}

extension Duration {
    /// The duration in whole nanoseconds, saturating at `Int64.max`.
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return scaled + attoseconds / 1_000_000_000
    }
}

extension StringProtocol {
    /// Returns the string without leading and trailing spaces and tabs.
    func trimmingSpaces() -> String {
        var slice = Substring(self)
        while let first = slice.first, first == " " || first == "\t" { slice = slice.dropFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice = slice.dropLast() }
        return String(slice)
    }
}
