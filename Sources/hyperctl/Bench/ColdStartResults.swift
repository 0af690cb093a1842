import Hyper

/// The figures of one measured row.
struct RowFigures: Equatable, Sendable {
    var runs: Int
    var minimum: Double
    var median: Double
    var p90: Double
    var maximum: Double
    /// The peak RSS of the largest process of the tree in one extra run, in KiB (GNU time's %M); nil without
    /// GNU time.
    var peakResidentKiB: Int?

    /// Figures of `milliseconds` (at least one value).
    init(milliseconds: [Double], peakResidentKiB: Int?) {
        let sorted = milliseconds.sorted()
        runs = sorted.count
        minimum = sorted.first ?? 0
        maximum = sorted.last ?? 0
        median = Self.quantile(sorted, 0.5)
        p90 = Self.quantile(sorted, 0.9)
        self.peakResidentKiB = peakResidentKiB
    }

    /// Linear interpolation between the closest ranks of an ascending list.
    static func quantile(_ sorted: [Double], _ q: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let position = q * Double(sorted.count - 1)
        let lower = Int(position.rounded(.down))
        let upper = min(lower + 1, sorted.count - 1)
        return sorted[lower] + (sorted[upper] - sorted[lower]) * (position - Double(lower))
    }
}

/// A finished cold-start benchmark: the host, each row's figures or skip reason, and the baseline.
struct ColdStartResults: Sendable {
    struct Row: Sendable {
        var name: String
        var kind: BenchRow.Kind
        var figures: RowFigures?
        var skipReason: String?
    }

    var host: [(String, JSONValue)]
    var runs: Int
    var warmup: Int
    var baseline: String?
    var rows: [Row]

    private var baselineMedian: Double? {
        rows.first { $0.name == baseline }?.figures?.median
    }

    func ratio(_ row: Row) -> Double? {
        guard let median = row.figures?.median, let base = baselineMedian, base > 0 else { return nil }
        return median / base
    }

    static func format(_ value: Double, decimals: Int = 2) -> String {
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let rounded = (value * scale).rounded() / scale
        var text = String(rounded)
        if let dot = text.firstIndex(of: ".") {
            let fraction = text[text.index(after: dot)...]
            if fraction.count < decimals { text += String(repeating: "0", count: decimals - fraction.count) }
        } else if decimals > 0 {
            text += "." + String(repeating: "0", count: decimals)
        }
        return text
    }

    /// The plain table for stdout.
    var table: String {
        let ratioHeader = baseline.map { "ratio to \($0)" } ?? "ratio"
        var lines = ["ROW                 MEDIAN ms    P90 ms    MIN ms    MAX ms   PEAK RSS KiB  \(ratioHeader.uppercased())"]
        func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
            let gap = String(repeating: " ", count: max(0, width - text.count))
            return left ? text + gap : gap + text
        }
        for row in rows {
            guard let figures = row.figures else {
                lines.append(pad(row.name, 19, left: true) + " skipped: " + (row.skipReason ?? ""))
                continue
            }
            let rss = figures.peakResidentKiB.map(String.init) ?? "-"
            let ratioText = ratio(row).map { Self.format($0) } ?? "-"
            lines.append(pad(row.name, 19, left: true) + pad(Self.format(figures.median), 10) + pad(Self.format(figures.p90), 10)
                         + pad(Self.format(figures.minimum), 10) + pad(Self.format(figures.maximum), 10) + pad(rss, 15) + "  " + ratioText)
        }
        lines.append("medians of \(runs) interleaved runs per row after \(warmup) warm-up round(s); peak RSS is the largest process of each tree")
        return lines.joined(separator: "\n") + "\n"
    }

    /// The machine-readable result: `host`, the run settings and `results`, one object per row.
    var json: JSONValue {
        let results: [JSONValue] = rows.map { row in
            guard let figures = row.figures else {
                return .object([("backend", .string(row.name)), ("kind", .string(row.kind.rawValue)), ("skipped", .string(row.skipReason ?? ""))])
            }
            return .object([
                ("backend", .string(row.name)), ("kind", .string(row.kind.rawValue)), ("runs", .integer(Int32(figures.runs))),
                ("min_ms", .number(figures.minimum)), ("median_ms", .number(figures.median)), ("p90_ms", .number(figures.p90)),
                ("max_ms", .number(figures.maximum)),
                ("peak_rss_kib", figures.peakResidentKiB.map { .integer(Int32(clamping: $0)) } ?? .null),
                ("ratio_to_baseline", ratio(row).map { .number($0) } ?? .null),
            ])
        }
        return .object([("host", .object(host)), ("runs", .integer(Int32(runs))), ("warmup", .integer(Int32(warmup))),
                        ("baseline", baseline.map { .string($0) } ?? .null), ("results", .array(results))])
    }

    /// An SVG bar chart of the medians with p90 whiskers, one bar per measured row.
    var svg: String {
        let measured = rows.filter { $0.figures != nil }
        let width = max(700, 120 + 90 * measured.count), height = 380
        let plotTop = 40.0, plotBottom = 290.0, plotLeft = 70.0
        let top = max(measured.map { $0.figures?.p90 ?? 0 }.max() ?? 1, 0.001) * 1.1
        func y(_ value: Double) -> Double { plotBottom - (plotBottom - plotTop) * value / top }
        func escape(_ text: String) -> String {
            text.reduce(into: "") { result, character in
                switch character {
                case "&": result += "&amp;"
                case "<": result += "&lt;"
                case ">": result += "&gt;"
                case "\"": result += "&quot;"
                default: result.append(character)
                }
            }
        }
        var parts = [
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\" font-family=\"sans-serif\" font-size=\"12\">",
            "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
            "<text x=\"\(width / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">hyperctl cold start: median wall time (ms), whiskers to p90</text>",
            "<line x1=\"\(plotLeft)\" y1=\"\(plotBottom)\" x2=\"\(Double(width) - 20)\" y2=\"\(plotBottom)\" stroke=\"black\"/>",
            "<line x1=\"\(plotLeft)\" y1=\"\(plotTop)\" x2=\"\(plotLeft)\" y2=\"\(plotBottom)\" stroke=\"black\"/>",
        ]
        for step in 0...4 {
            let value = top * Double(step) / 4
            parts.append("<text x=\"\(plotLeft - 6)\" y=\"\(Self.format(y(value) + 4, decimals: 1))\" text-anchor=\"end\">\(Self.format(value, decimals: 1))</text>")
            parts.append("<line x1=\"\(plotLeft)\" y1=\"\(Self.format(y(value), decimals: 1))\" x2=\"\(Double(width) - 20)\" y2=\"\(Self.format(y(value), decimals: 1))\" stroke=\"#ddd\"/>")
        }
        let colors: [BenchRow.Kind: String] = [.backend: "#3b6fb6", .peer: "#d08a2e", .reference: "#888888"]
        for (index, row) in measured.enumerated() {
            guard let figures = row.figures else { continue }
            let center = plotLeft + 55 + 90 * Double(index)
            let barTop = y(figures.median)
            parts.append("<rect x=\"\(Self.format(center - 25, decimals: 1))\" y=\"\(Self.format(barTop, decimals: 1))\" width=\"50\" height=\"\(Self.format(plotBottom - barTop, decimals: 1))\" fill=\"\(colors[row.kind] ?? "#3b6fb6")\"/>")
            let whisker = y(figures.p90)
            parts.append("<line x1=\"\(Self.format(center, decimals: 1))\" y1=\"\(Self.format(barTop, decimals: 1))\" x2=\"\(Self.format(center, decimals: 1))\" y2=\"\(Self.format(whisker, decimals: 1))\" stroke=\"black\"/>")
            parts.append("<line x1=\"\(Self.format(center - 8, decimals: 1))\" y1=\"\(Self.format(whisker, decimals: 1))\" x2=\"\(Self.format(center + 8, decimals: 1))\" y2=\"\(Self.format(whisker, decimals: 1))\" stroke=\"black\"/>")
            parts.append("<text x=\"\(Self.format(center, decimals: 1))\" y=\"\(Self.format(min(barTop, whisker) - 5, decimals: 1))\" text-anchor=\"middle\">\(Self.format(figures.median))</text>")
            parts.append("<text x=\"\(Self.format(center, decimals: 1))\" y=\"\(plotBottom + 16)\" text-anchor=\"middle\">\(escape(row.name))</text>")
        }
        parts.append("<text x=\"\(plotLeft)\" y=\"\(height - 36)\">blue: hyperctl's backends; orange: peer tools; grey: a process that does nothing.</text>")
        parts.append("<text x=\"\(plotLeft)\" y=\"\(height - 18)\">Medians of \(runs) interleaved runs per row after \(warmup) warm-up round(s).</text>")
        parts.append("</svg>")
        return parts.joined(separator: "\n") + "\n"
    }
}
