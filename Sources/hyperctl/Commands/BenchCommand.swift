import Hyper

/// `hyperctl bench cold-start`: times whole cold starts of each backend and of peer tools, interleaved,
/// and reports medians, tails, peak memory and ratios to a baseline row. `hyperctl bench snapshot`: a tiny
/// guest restored from a snapshot against booted cold (see `SnapshotBench`).
enum BenchCommand: CLICommand {
    static let name = "bench"
    static let abstract = "Benchmark cold starts across backends and peers, and snapshot restores"
    static let usage = "bench cold-start [--backends LIST] [--peers LIST] [--runs N] [--warmup N] [--baseline ROW] [--json FILE] [--plot FILE.svg]\n       hyperctl bench snapshot [--guest tiny|kit] [--runs N] [--warmup N] [--json FILE]"
    static let options: [OptionSpec] = [
        OptionSpec(["--backends"], value: "LIST", help: "Backend rows (default: \(ColdStartPlan.backendRows.joined(separator: ",")))"),
        OptionSpec(["--peers"], value: "LIST", help: "Peer rows, or none (default: \(ColdStartPlan.peerRows.joined(separator: ",")))"),
        OptionSpec(["--runs"], value: "N", help: "Measured runs per row (default 20)"),
        OptionSpec(["--warmup"], value: "N", help: "Unmeasured rounds first (default 2)"),
        OptionSpec(["--baseline"], value: "ROW", help: "The row ratios are taken against (default: bwrap, else process, else true)"),
        OptionSpec(["--json"], value: "FILE", help: "Write the results as JSON: host and results"),
        OptionSpec(["--plot"], value: "FILE", help: "Write an SVG bar chart of the medians with p90 whiskers"),
        OptionSpec(["--hyperctl"], value: "PATH", help: "The hyperctl binary to time (default: this one)"),
        OptionSpec(["--guest"], value: "GUEST", help: "snapshot: tiny (the counting guest, any KVM) or kit (the Linux guest kit; hardware virtualization)"),
    ]
    static let discussion = """
    Each run is one whole process, spawned and waited for, so launcher start-up counts. Rows run interleaved
    (A B C A B C ...) so that drift on a noisy machine hits every row alike. A row that cannot run here stays
    in the output as skipped, with the reason. The kvm row is `run --backend kvm -- true` on the guest kit,
    the default start path (restored from its boot snapshot, which the first run makes); kvm-cold-boot is the
    same with --cold-boot; their -agent-ready rows are the launch-to-agent-ready times from the same runs'
    reports; kvm-minimal is the VMM alone booting the built-in tiny guest.

    snapshot times a tiny guest on /dev/kvm (an unaccelerated one will do) to its next byte on COM1, booted
    cold against restored from a snapshot folder (copy-on-write memory), interleaved, with the ratio; then
    the memory that ten clones of one snapshot add against ten cold boots. With --guest kit it times
    `run --backend kvm -- true` on the guest kit instead: launch to agent ready, from the boot snapshot (the
    default path) against --cold-boot, interleaved, with the ratio (default 10 runs, 1 warm-up).
    """

    static func run(_ arguments: ParsedArguments, context: CommandContext) throws(HyperError) -> Int32 {
        switch arguments.positionals {
        case ["cold-start"]: return try runColdStart(arguments, context: context)
        case ["snapshot"]: return try runSnapshot(arguments, context: context)
        default:
            throw HyperError(.invalidArgument, "bench: the benchmark to run is cold-start or snapshot (got \"\(arguments.positionals.joined(separator: " "))\")")
        }
    }

    static func runSnapshot(_ arguments: ParsedArguments, context: CommandContext) throws(HyperError) -> Int32 {
        for option in ["--backends", "--peers", "--baseline", "--plot"] where arguments.has(option) {
            throw HyperError(.invalidArgument, "\(option) applies to bench cold-start, not snapshot")
        }
        let jsonPath = arguments.value("--json").map { SandboxSpec.absolute($0, base: context.currentDirectory) }
        switch arguments.value("--guest") ?? "tiny" {
        case "tiny": break
        case "kit": return try runKitSnapshot(arguments, jsonPath: jsonPath, context: context)
        case let other: throw HyperError(.invalidArgument, "--guest: \"\(other)\" is not a guest (tiny or kit)")
        }
        if arguments.has("--hyperctl") { throw HyperError(.invalidArgument, "--hyperctl applies to bench cold-start and snapshot --guest kit") }
        let runs = try count(arguments, "--runs", default: 50, minimum: 1)
        let warmup = try count(arguments, "--warmup", default: 3, minimum: 0)
        guard HostSystem.fileKind(at: "/dev/kvm") == .other else {
            throw HyperError(.backendUnavailable, "bench snapshot: /dev/kvm is missing; the tiny guest needs KVM")
        }
        let folder = "/tmp/hyperctl-bench-snapshot-\(HostSystem.processID)"
        defer { HostSystem.removeTree(folder) }
        let results = try SnapshotBench().run(runs: runs, warmup: warmup, folder: folder) { progress($0, context: context) }
        try report(table: results.table, json: results.json, to: jsonPath, context: context)
        return 0
    }

    /// `bench snapshot --guest kit`: whole `run`s of the guest kit, from its boot snapshot against cold.
    static func runKitSnapshot(_ arguments: ParsedArguments, jsonPath: String?, context: CommandContext) throws(HyperError) -> Int32 {
        let runs = try count(arguments, "--runs", default: 10, minimum: 1)
        let warmup = try count(arguments, "--warmup", default: 1, minimum: 0)
        guard let hyperctl = arguments.value("--hyperctl").map({ SandboxSpec.absolute($0, base: context.currentDirectory) }) ?? HostSystem.executablePath() else {
            throw HyperError(.hostFailure, "bench: cannot find this hyperctl binary; pass --hyperctl PATH")
        }
        guard let probe = context.registry.backend(named: "kvm")?.probe(), probe.isAvailable else {
            throw HyperError(.backendUnavailable, "bench snapshot --guest kit: kvm is not available here")
        }
        guard probe.isAccelerated == true else {
            throw HyperError(.backendUnavailable, "bench snapshot --guest kit: kvm here is not hardware-accelerated (\(probe.reason)); a Linux guest would take minutes to boot (--guest tiny runs here)")
        }
        _ = try GuestKit.locate()
        let scratch = "/tmp/hyperctl-bench-kit-\(HostSystem.processID)-\(HostSystem.monotonicNanoseconds())"
        do { try HostSystem.makeNewDirectory(scratch, mode: 0o700) } catch { throw HyperError(.hostFailure, "bench: \(error)") }
        defer { HostSystem.removeTree(scratch) }
        let results = try KitSnapshotBench(hyperctl: hyperctl, scratch: scratch).run(runs: runs, warmup: warmup) { progress($0, context: context) }
        try report(table: results.table, json: results.json, to: jsonPath, context: context)
        return 0
    }

    /// Prints a snapshot benchmark's table, and writes its JSON with the host's facts when asked.
    static func report(table: String, json: JSONValue, to jsonPath: String?, context: CommandContext) throws(HyperError) {
        if isTerminal(context) { try? HostSystem.writeAll(context.streams.error, Array("\r\u{1B}[K".utf8)) }
        context.print(table)
        guard let jsonPath else { return }
        let document = JSONValue.object([("host", .object(hostFacts(context.registry))), ("snapshot", json)])
        do { try HostSystem.writeFile(jsonPath, Array((document.formatted() + "\n").utf8)) } catch { throw HyperError(.hostFailure, "bench: \(error)") }
    }

    static func runColdStart(_ arguments: ParsedArguments, context: CommandContext) throws(HyperError) -> Int32 {
        if arguments.has("--guest") { throw HyperError(.invalidArgument, "--guest applies to bench snapshot, not cold-start") }
        let runs = try count(arguments, "--runs", default: 20, minimum: 1)
        let warmup = try count(arguments, "--warmup", default: 2, minimum: 0)
        let cwd = context.currentDirectory
        let jsonPath = arguments.value("--json").map { SandboxSpec.absolute($0, base: cwd) }
        let plotPath = arguments.value("--plot").map { SandboxSpec.absolute($0, base: cwd) }
        guard let hyperctl = arguments.value("--hyperctl").map({ SandboxSpec.absolute($0, base: cwd) }) ?? HostSystem.executablePath() else {
            throw HyperError(.hostFailure, "bench: cannot find this hyperctl binary; pass --hyperctl PATH")
        }
        let backends = try list(arguments.value("--backends"), known: ColdStartPlan.backendRows, what: "--backends")
        let peers = try list(arguments.value("--peers"), known: ColdStartPlan.peerRows, what: "--peers")

        let plan = try ColdStartPlan(hyperctl: hyperctl, registry: context.registry, backends: backends, peers: peers)
        defer { plan.cleanUp() }
        var measuredRows = plan.rows.filter { $0.arguments != nil }
        let baseline = arguments.value("--baseline") ?? ["bwrap", "process"].first { name in measuredRows.contains { $0.name == name } } ?? "true"
        guard plan.rows.contains(where: { $0.name == baseline }) else {
            throw HyperError(.invalidArgument, "--baseline: no row \"\(baseline)\" (rows: \(plan.rows.map(\.name).joined(separator: ", ")))")
        }

        var samples: [String: [Double]] = [:]
        var peaks: [String: Int] = [:]
        var failures: [String: String] = [:]
        let rounds = warmup + runs
        for round in 0..<rounds {
            for row in measuredRows {
                guard let command = row.arguments else { continue }
                progress("cold-start: round \(round + 1) of \(rounds)\(round < warmup ? " (warm-up)" : ""), \(row.name)", context: context)
                let result: MeasuredRun
                do {
                    result = try HostSystem.runMeasured(command)
                } catch {
                    failures[row.name] = "could not start: \(error)"
                    continue
                }
                guard result.exitCode == 0 else {
                    failures[row.name] = "failed: exit \(result.exitCode) on round \(round + 1) (`\(command.joined(separator: " "))`)"
                    continue
                }
                guard round >= warmup else { continue }
                samples[row.name, default: []].append(Double(result.nanoseconds) / 1e6)
                if let report = row.reportPath, let agentReady = agentReadyMilliseconds(report) {
                    samples[row.name + agentReadySuffix, default: []].append(agentReady)
                }
            }
            measuredRows.removeAll { failures[$0.name] != nil }
        }
        // Peak memory: one more run of each row under GNU time, whose small fork child records only the
        // measured tree (a spawn from this process would report this process's own size first).
        for row in measuredRows {
            guard let command = row.arguments else { continue }
            progress("cold-start: peak memory, \(row.name)", context: context)
            if let peak = peakResidentKiB(command, scratch: plan.scratch) { peaks[row.name] = peak }
        }
        if isTerminal(context) { try? HostSystem.writeAll(context.streams.error, Array("\r\u{1B}[K".utf8)) }

        var rows: [ColdStartResults.Row] = []
        for row in plan.rows {
            if let reason = row.skipReason ?? failures[row.name] {
                rows.append(.init(name: row.name, kind: row.kind, figures: nil, skipReason: reason))
                if row.hasAgentReadyRow { rows.append(.init(name: row.name + agentReadySuffix, kind: .backend, figures: nil, skipReason: reason)) }
                continue
            }
            rows.append(.init(name: row.name, kind: row.kind, figures: samples[row.name].map { RowFigures(milliseconds: $0, peakResidentKiB: peaks[row.name]) }))
            if row.hasAgentReadyRow {
                let ready = samples[row.name + agentReadySuffix].map { RowFigures(milliseconds: $0, peakResidentKiB: nil) }
                rows.append(.init(name: row.name + agentReadySuffix, kind: .backend, figures: ready, skipReason: ready == nil ? "the runs' reports had no agent-ready time" : nil))
            }
        }
        let results = ColdStartResults(host: hostFacts(context.registry), runs: runs, warmup: warmup, baseline: baseline, rows: rows)
        context.print(results.table)
        do {
            if let jsonPath { try HostSystem.writeFile(jsonPath, Array((results.json.formatted() + "\n").utf8)) }
            if let plotPath { try HostSystem.writeFile(plotPath, Array(results.svg.utf8)) }
        } catch {
            throw HyperError(.hostFailure, "bench: \(error)")
        }
        return 0
    }

    /// The kvm rows' companions: launch to the guest agent's ready, from the runs' reports.
    static let agentReadySuffix = "-agent-ready"

    static func count(_ arguments: ParsedArguments, _ option: String, default value: Int, minimum: Int) throws(HyperError) -> Int {
        guard let text = arguments.value(option) else { return value }
        guard let number = Int(text), number >= minimum, number <= 100_000 else {
            throw HyperError(.invalidArgument, "\(option): \"\(text)\" is not a whole number from \(minimum) to 100000")
        }
        return number
    }

    /// Parses a comma-separated row list; `none` is the empty list; nil when not given.
    static func list(_ text: String?, known: [String], what: String) throws(HyperError) -> [String]? {
        guard let text else { return nil }
        if text == "none" { return [] }
        let names = text.split(separator: ",").map(String.init)
        for name in names where !known.contains(name) {
            throw HyperError(.invalidArgument, "\(what): unknown row \"\(name)\" (rows: \(known.joined(separator: ", ")))")
        }
        return names
    }

    /// Says where the run is: rewriting one line on a terminal, a line per step otherwise.
    static func progress(_ line: String, context: CommandContext) {
        try? HostSystem.writeAll(context.streams.error, Array((isTerminal(context) ? "\r\u{1B}[K\(line)" : line + "\n").utf8))
    }

    static func isTerminal(_ context: CommandContext) -> Bool { HostSystem.windowSize(context.streams.error) != nil }

    /// The peak RSS (KiB) of the largest process of one run of `command`, from GNU time; nil without it.
    static func peakResidentKiB(_ command: [String], scratch: String) -> Int? {
        let time = "/usr/bin/time"
        guard HostSystem.fileKind(at: time) == .regularFile else { return nil }
        let output = scratch + "/peak-rss"
        guard let run = try? HostSystem.runMeasured([time, "-f", "%M", "-o", output] + command), run.exitCode == 0,
              let text = HostSystem.readText(output) else { return nil }
        return text.split(separator: "\n").last.flatMap { Int($0) }
    }

    /// The launch-to-agent-ready time in a run report, in milliseconds.
    static func agentReadyMilliseconds(_ path: String) -> Double? {
        guard let text = HostSystem.readText(path), let report = try? JSONValue.parse(text), case let .array(events)? = report["timeline"] else { return nil }
        for event in events where event["phase"] == .string("agentReady") {
            if case let .number(nanoseconds)? = event["ns"] { return nanoseconds / 1e6 }
        }
        return nil
    }

    /// What the results say about the machine they come from.
    static func hostFacts(_ registry: BackendRegistry) -> [(String, JSONValue)] {
        let cpuinfo = HostSystem.readText("/proc/cpuinfo") ?? ""
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }?.split(separator: ":", maxSplits: 1).last
            .map { String($0.drop { $0 == " " }) } ?? "unknown"
        let cores = cpuinfo.split(separator: "\n").filter { $0.hasPrefix("processor") }.count
        let kvm = registry.backend(named: "kvm")?.probe()
        return [("cpu", .string(model)), ("cores", .integer(Int32(cores))), ("kernel", .string(HostSystem.kernelRelease())),
                ("kvmAvailable", .bool(kvm?.isAvailable ?? false)), ("accelerated", kvm?.isAccelerated.map { .bool($0) } ?? .null),
                ("kvm", .string(kvm?.reason ?? "not in this build"))]
    }
}
