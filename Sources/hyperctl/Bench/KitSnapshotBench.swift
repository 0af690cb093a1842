import Hyper

/// `hyperctl bench snapshot --guest kit`: the guest kit's Linux on kvm, `hyperctl run --backend kvm -- true`
/// started the default way (restored from its boot snapshot) against booted with `--cold-boot`, interleaved.
///
/// Each run is a whole hyperctl process. The figure compared is launch to agent-ready from the run's
/// report (where the two paths differ); the whole run's wall time is shown beside it. A first, unmeasured
/// run makes the boot snapshot when the cache has none, and its save time is reported.
struct KitSnapshotBench {
    let hyperctl: String
    /// A private folder for the runs' reports.
    let scratch: String

    struct Results {
        var coldReady: RowFigures
        var restoredReady: RowFigures
        var coldRun: RowFigures
        var restoredRun: RowFigures
        /// How long the first run took to save the boot snapshot, when it had to make one.
        var snapshotSaveMilliseconds: Double?
        var ratio: Double { coldReady.median > 0 ? restoredReady.median / coldReady.median : 0 }
    }

    /// One run: its wall time, its launch-to-agent-ready time and its report.
    private struct Run {
        var milliseconds: Double
        var readyMilliseconds: Double
        var report: JSONValue
        var start: String { if case let .string(start)? = report["start"] { start } else { "unknown" } }
    }

    private func once(coldBoot: Bool) throws(HyperError) -> Run {
        let report = scratch + "/report.json"
        HostSystem.removeQuietly(report)
        let command = [hyperctl, "run", "--backend", "kvm"] + (coldBoot ? ["--cold-boot"] : []) + ["--report", report, "--", "true"]
        let measured: MeasuredRun
        do { measured = try HostSystem.runMeasured(command, errorPath: scratch + "/stderr") } catch { throw HyperError(.hostFailure, "bench snapshot: \(error)") }
        guard measured.exitCode == 0 else {
            let detail = HostSystem.readText(scratch + "/stderr").map { ": " + $0.split(separator: "\n").suffix(3).joined(separator: " / ") } ?? ""
            throw HyperError(.phaseFailed, "bench snapshot: `\(command.joined(separator: " "))` exited \(measured.exitCode)\(detail)")
        }
        guard let text = HostSystem.readText(report), let document = try? JSONValue.parse(text),
              let ready = BenchCommand.agentReadyMilliseconds(report) else {
            throw HyperError(.phaseFailed, "bench snapshot: the run's report \(report) has no agent-ready time")
        }
        return Run(milliseconds: Double(measured.nanoseconds) / 1e6, readyMilliseconds: ready, report: document)
    }

    func run(runs: Int, warmup: Int, progress: (String) -> Void) throws(HyperError) -> Results {
        progress("snapshot: a first run, which makes the boot snapshot if there is none")
        let first = try once(coldBoot: false)
        var save: Double?
        if first.start == "cold-boot" {
            guard case let .number(milliseconds)? = first.report["bootSnapshot"]?["milliseconds"] else {
                throw HyperError(.phaseFailed, "bench snapshot: the first run booted cold and saved no boot snapshot (\(first.report["bootSnapshot"]?.formatted() ?? "no bootSnapshot in its report"))")
            }
            save = milliseconds
        }
        var cold: [Run] = []
        var restored: [Run] = []
        for round in 0..<(warmup + runs) {
            progress("snapshot: round \(round + 1) of \(warmup + runs)\(round < warmup ? " (warm-up)" : ""), Linux guest kit")
            let coldRun = try once(coldBoot: true)
            let restoredRun = try once(coldBoot: false)
            guard restoredRun.start == "snapshot" else {
                throw HyperError(.phaseFailed, "bench snapshot: a default-path run did not start from the boot snapshot (its report says \(restoredRun.start))")
            }
            guard round >= warmup else { continue }
            cold.append(coldRun)
            restored.append(restoredRun)
        }
        let figures = { (runs: [Run], value: (Run) -> Double) in RowFigures(milliseconds: runs.map(value), peakResidentKiB: nil) }
        return Results(coldReady: figures(cold, \.readyMilliseconds), restoredReady: figures(restored, \.readyMilliseconds),
                       coldRun: figures(cold, \.milliseconds), restoredRun: figures(restored, \.milliseconds), snapshotSaveMilliseconds: save)
    }
}

extension KitSnapshotBench.Results {
    /// The ratio as a decimal, or as 1/N when it is below a hundredth (a restore that skips a whole boot).
    var ratioText: String {
        guard ratio > 0, ratio < 0.01 else { return ColdStartResults.format(ratio) }
        return "1/\(Int((1 / ratio).rounded()))"
    }

    /// The human-readable report.
    var table: String {
        let show = { (value: Double) in ColdStartResults.format(value) + " ms" }
        var lines = ["guest kit (Linux, agent as PID 1) on kvm, \(coldReady.runs) interleaved rounds of `hyperctl run --backend kvm -- true`:"]
        lines.append("  launch to agent ready:")
        lines.append("    cold boot (--cold-boot)  median \(show(coldReady.median))  p90 \(show(coldReady.p90))")
        lines.append("    boot snapshot restore    median \(show(restoredReady.median))  p90 \(show(restoredReady.p90))  ratio \(ratioText) of cold")
        lines.append("  whole run (process start to exit):")
        lines.append("    cold boot                median \(show(coldRun.median))  p90 \(show(coldRun.p90))")
        lines.append("    boot snapshot restore    median \(show(restoredRun.median))  p90 \(show(restoredRun.p90))")
        if let save = snapshotSaveMilliseconds { lines.append("  the first run saved the boot snapshot in \(show(save))") }
        return lines.joined(separator: "\n") + "\n"
    }

    var json: JSONValue {
        var members: [(String, JSONValue)] = [("guest", .string("guest kit")), ("coldBootToAgentReady", SnapshotBench.figuresJSON(coldReady)),
                                              ("restoreToAgentReady", SnapshotBench.figuresJSON(restoredReady)), ("restoreToColdRatio", .number(ratio)),
                                              ("coldBootRun", SnapshotBench.figuresJSON(coldRun)), ("restoreRun", SnapshotBench.figuresJSON(restoredRun))]
        if let save = snapshotSaveMilliseconds { members.append(("bootSnapshotSaveMs", .number(save))) }
        return .object(members)
    }
}
