import Hyper

/// `hyperctl create`: starts a long-lived sandbox under its own supervisor process and returns once it is ready.
enum CreateCommand: CLICommand {
    static let name = "create"
    static let abstract = "Start a sandbox that stays up for many commands (see exec, ps, stop, rm)"
    static let usage = "create [OPTIONS] [--name NAME]"
    static let options: [OptionSpec] = [
        OptionSpec(["--name"], value: "NAME", help: "The sandbox's name (default: a new sandbox-XXXXXXXX, printed)"),
        OptionSpec(["--backend"], value: "NAME", help: "kvm, process, or auto (default: auto)"),
    ] + SpecFlags.options.filter { !["--interactive", "--tty"].contains($0.key) } + MachineFlags.options + [
        OptionSpec(["--verbose", "-v"], help: "Say which backend was picked and why"),
    ]
    static let discussion = """
    The spec flags are run's, and fix the sandbox's files, network, secrets and limits for every command
    run in it; --timeout limits the sandbox's whole life. On kvm the workspace is copied into the guest
    here and back when the sandbox stops. Commands come later, with
    hyperctl exec NAME -- CMD. The sandbox keeps running after this command returns, owned by a
    supervisor process, until hyperctl stop or rm. It prints the name.
    """

    static func run(_ arguments: ParsedArguments, context: CommandContext) throws(HyperError) -> Int32 {
        SessionCLI.sweep(context)
        guard arguments.positionals.isEmpty else {
            throw HyperError(.invalidArgument, "create takes no command; run commands in the sandbox with hyperctl exec NAME -- CMD")
        }
        let spec = try SpecFlags.makeSpec(arguments, context: context, requiringCommand: false)
        let selection = try context.registry.select(arguments.value("--backend") ?? BackendRegistry.automaticName)
        if arguments.has("--verbose") { context.note("backend \(selection.backend.name): \(selection.reason)") }
        try MachineFlags.check(arguments, backend: selection.backend)
        var options = LaunchOptions()
        try MachineFlags.apply(arguments, directory: context.currentDirectory, to: &options)
        // Refused here rather than by the supervisor, so that the caller reads why.
        try selection.backend.checkSupport(spec, options: options)
        let name: String
        if let given = arguments.value("--name") { name = given } else { name = try SessionCLI.generatedName() }
        let client = SessionCLI.client()
        try client.store.reserve(name)
        do throws(HyperError) {
            try startSupervisor(name: name, backend: selection.backend.name, spec: spec, store: client.store,
                                machineArguments: MachineFlags.arguments(for: options))
        } catch {
            client.store.remove(name)
            throw error
        }
        context.print(name + "\n")
        return 0
    }

    /// Starts `hyperctl supervise` detached, hands it the spec on its stdin, and waits for it to say ready.
    static func startSupervisor(name: String, backend: String, spec: SandboxSpec, store: SessionStore, machineArguments: [String]) throws(HyperError) {
        guard let program = HostSystem.executablePath() else { throw HyperError(.hostFailure, "cannot find hyperctl's own executable") }
        let log: Int32
        let specPipe: (read: Int32, write: Int32)
        let readyPipe: (read: Int32, write: Int32)
        do {
            log = try HostSystem.createFile(store.logPath(name))
            specPipe = try HostSystem.makePipe()
            readyPipe = try HostSystem.makePipe()
        } catch {
            throw HyperError(.hostFailure, "starting the supervisor: \(error)")
        }
        defer { HostSystem.closeDescriptor(readyPipe.read) }
        do {
            let arguments = [program, SessionCLI.superviseCommand, "--name", name, "--backend", backend] + machineArguments
            _ = try HostSystem.spawn(path: program, arguments: arguments,
                                     descriptors: [specPipe.read, log, log, readyPipe.write], newSession: true)
        } catch {
            [log, specPipe.read, specPipe.write, readyPipe.write].forEach(HostSystem.closeDescriptor)
            throw HyperError(.hostFailure, "starting the supervisor: \(error)")
        }
        [log, specPipe.read, readyPipe.write].forEach(HostSystem.closeDescriptor)
        try? HostSystem.writeAll(specPipe.write, Array(spec.document.compactText.utf8))
        HostSystem.closeDescriptor(specPipe.write)
        var answer: [UInt8] = []
        while let chunk = try? HostSystem.readSome(readyPipe.read), !chunk.isEmpty { answer += chunk }
        let text = String(decoding: answer, as: UTF8.self).trimmingTrailingNewlines()
        guard text == "ready" else {
            throw HyperError(.phaseFailed, text.isEmpty ? "the supervisor of \(name) ended before the sandbox was ready (see \(store.logPath(name)))" : text)
        }
    }
}

extension String {
    func trimmingTrailingNewlines() -> String {
        var text = self
        while text.hasSuffix("\n") { text.removeLast() }
        return text
    }
}
