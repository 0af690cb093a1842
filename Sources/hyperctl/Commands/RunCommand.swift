import Hyper

/// `hyperctl run`: starts one sandbox, runs one command in it, and exits with the command's code.
enum RunCommand: CLICommand {
    static let name = "run"
    static let abstract = "Run a command in a new sandbox and exit with its code"
    static let usage = "run [OPTIONS] [--] CMD [ARG...]"
    static let optionsEndAtCommand = true
    static let options: [OptionSpec] = [
        OptionSpec(["--backend"], value: "NAME", help: "kvm, process, fake, or auto (default: auto)"),
    ] + SpecFlags.options + [
        OptionSpec(["--report"], value: "FILE", help: "Write a JSON record: backend, spec summary, timeline, exit status"),
        OptionSpec(["--hostname"], value: "NAME", help: "The sandbox's hostname (default: sandbox)"),
        OptionSpec(["--seed"], value: "N", help: "Seed of simulated backends (default 0)"),
        OptionSpec(["--fake-fault"], value: "PHASE[:fail|hang]", repeatable: true,
                   help: "Inject a fault (fake backend) into a phase: create, boot, agent-ready, start, exit"),
    ] + MachineFlags.options + [
        OptionSpec(["--verbose", "-v"], help: "Say which backend was picked and why"),
    ]
    static let discussion = """
    Options end at the first argument that is not an option, so the command's own flags are left alone.
    The command's stdout and stderr pass through untouched; hyperctl's own messages go to stderr.
    """

    static func run(_ arguments: ParsedArguments, context: CommandContext) throws(HyperError) -> Int32 {
        let spec = try SpecFlags.makeSpec(arguments, context: context)
        var options = LaunchOptions()
        options.streams = context.streams
        if let seedText = arguments.value("--seed") {
            guard let seed = UInt64(seedText) else {
                throw HyperError(.invalidArgument, "--seed: \"\(seedText)\" is not a whole number from 0 to \(UInt64.max)")
            }
            options.seed = seed
        }
        for text in arguments.all("--fake-fault") { options.faults.append(try PhaseFault.parse(text)) }
        if let hostname = arguments.value("--hostname") {
            // Hostnames follow the rules of sandbox names (which become the hostnames of sessions).
            do { try SessionStore.validateName(hostname) } catch { throw HyperError(.invalidArgument, "--hostname: " + error.message) }
            options.hostname = hostname
        }
        try MachineFlags.apply(arguments, directory: context.currentDirectory, to: &options)

        let selection = try context.registry.select(arguments.value("--backend") ?? BackendRegistry.automaticName)
        let backend = selection.backend
        if arguments.has("--verbose") { context.note("backend \(backend.name): \(selection.reason)") }
        try MachineFlags.check(arguments, backend: backend)

        let reportPath = arguments.value("--report").map { SandboxSpec.absolute($0, base: context.currentDirectory) }
        var details: [(String, JSONValue)] = []
        if backend.isolation == .simulated { details.append(("seed", .string(String(options.seed)))) }

        var timeline: [PhaseEvent] = []
        // ^C and ^\ from the terminal go to the whole foreground group; the sandbox handles them, not hyperctl.
        if backend.isolation != .simulated { HostSystem.ignoreInterrupts() }
        let terminal = spec.tty ? TerminalSettings.makeRaw(context.streams.input) : nil
        defer { terminal?.restore() }
        do throws(HyperError) {
            let handle = try backend.launch(spec, options: options)
            let status: SandboxExit
            do throws(HyperError) {
                status = try handle.wait()
            } catch {
                timeline = handle.timeline
                throw error
            }
            if let reportPath {
                let report = SandboxReport(backend: backend.name, spec: spec, timeline: handle.timeline, status: status,
                                           details: details + handle.reportDetails)
                try write(report, to: reportPath)
            }
            if status == .timedOut, let limit = spec.limits.timeout {
                context.note("timed out after \(Units.formatDuration(limit)); the sandbox was killed")
            }
            return status.exitCode
        } catch {
            if let reportPath {
                let report = SandboxReport(backend: backend.name, spec: spec, timeline: timeline, status: nil,
                                           failure: error.message, details: details)
                try? write(report, to: reportPath)
            }
            throw error
        }
    }

    static func write(_ report: SandboxReport, to path: String) throws(HyperError) {
        do {
            try HostSystem.writeFile(path, Array(report.text.utf8))
        } catch {
            throw HyperError(.hostFailure, "report: \(error)")
        }
    }
}
