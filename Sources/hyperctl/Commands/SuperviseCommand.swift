import Hyper

/// `hyperctl supervise` (internal; `create` starts it): becomes one sandbox's supervisor. It reads the spec
/// document on stdin, launches the session sandbox, says `ready` (or why not) on descriptor 3, and serves the
/// sandbox's control socket until it is stopped.
enum SuperviseCommand: CLICommand {
    static let name = SessionCLI.superviseCommand
    static let abstract = "Internal: the supervisor process of one sandbox (started by create)"
    static let usage = "supervise --name NAME --backend NAME"
    static let options: [OptionSpec] = [
        OptionSpec(["--name"], value: "NAME", help: "The sandbox's name (its folder exists already)"),
        OptionSpec(["--backend"], value: "NAME", help: "The backend create picked"),
    ] + MachineFlags.options
    /// Where `create` reads the supervisor's readiness.
    static let readinessDescriptor: Int32 = 3

    static func run(_ arguments: ParsedArguments, context: CommandContext) throws(HyperError) -> Int32 {
        guard let name = arguments.value("--name"), let backendName = arguments.value("--backend") else {
            throw HyperError(.invalidArgument, "supervise is started by hyperctl create")
        }
        try SessionStore.validateName(name)
        let store = SessionStore.standard()
        let supervisor: SessionSupervisor
        let spec: SandboxSpec
        do throws(HyperError) {
            var input: [UInt8] = []
            while let chunk = try? HostSystem.readSome(context.streams.input), !chunk.isEmpty { input += chunk }
            spec = try SandboxSpec.decode(json: String(decoding: input, as: UTF8.self), baseDirectory: "/").validated(requiringCommand: false)
            guard let backend = context.registry.backend(named: backendName) else { throw HyperError(.unknownBackend, "no backend \(backendName)") }
            // Signals to the session come as requests; the terminal and session of create are left behind.
            HostSystem.ignoreInterrupts()
            var options = LaunchOptions()
            try MachineFlags.apply(arguments, directory: "/", to: &options)
            options.streams = StandardStreams(input: context.streams.input, output: context.streams.error, error: context.streams.error)
            options.hostname = name
            let sandbox = try backend.launchSession(spec, options: options)
            supervisor = try SessionSupervisor(name: name, backend: backend.name, workspace: spec.workspace, sandbox: sandbox, store: store)
        } catch {
            try? HostSystem.writeAll(readinessDescriptor, Array((error.message + "\n").utf8))
            throw error
        }
        try? HostSystem.writeAll(readinessDescriptor, Array("ready\n".utf8))
        HostSystem.closeDescriptor(readinessDescriptor)
        context.note("sandbox \(name) (\(backendName)) ready")
        supervisor.serve()
        context.note("sandbox \(name) stopped")
        return 0
    }
}
