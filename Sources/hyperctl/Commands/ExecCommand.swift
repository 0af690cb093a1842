import Hyper

/// `hyperctl exec`: runs a command in a running sandbox and exits with its code.
enum ExecCommand: CLICommand {
    static let name = "exec"
    static let abstract = "Run a command in a running sandbox and exit with its code"
    static let usage = "exec [-i] [-t] [--env K=V] [--workdir DIR] NAME [--] CMD [ARG...]"
    static let optionsEndAtCommand = true
    static let options: [OptionSpec] = [
        OptionSpec(["--interactive", "-i"], help: "Forward stdin to the command"),
        OptionSpec(["--tty", "-t"], help: "Give the command a terminal (raw mode here; window size follows)"),
        OptionSpec(["--env", "-e"], value: "K=V", repeatable: true, help: "Add an environment variable to the sandbox's"),
        OptionSpec(["--workdir"], value: "DIR", help: "Working directory inside (default: the sandbox's)"),
    ]
    static let discussion = """
    The command's stdin, stdout and stderr are this process's own, handed to the sandbox's supervisor, so
    output goes straight to the terminal or pipe. Signals sent to hyperctl exec go to the command; if
    hyperctl exec goes away, the command is killed. Exit codes are run's.
    """

    static func run(_ arguments: ParsedArguments, context: CommandContext) throws(HyperError) -> Int32 {
        let name = try SessionCLI.name(arguments, command: "exec")
        var command = Array(arguments.positionals.dropFirst())
        if command.first == "--" { command.removeFirst() }
        guard let program = command.first, !program.isEmpty else {
            throw HyperError(.invalidArgument, "exec: give the command after the sandbox's name: hyperctl exec \(name) -- CMD")
        }
        var environment: [String] = []
        for text in arguments.all("--env") {
            let variable = try EnvironmentVariable.parse(text)
            environment.append("\(variable.name)=\(variable.value)")
        }
        let workdir = arguments.value("--workdir")
        if let workdir, !workdir.hasPrefix("/") { throw HyperError(.invalidArgument, "--workdir: \(workdir) must be an absolute path inside the sandbox") }

        let channel = try SessionCLI.client().connect(name)
        // Signals to hyperctl go to the command; block them before any other thread exists.
        let signals = try HostSignalRelay()
        var request: [(String, JSONValue)] = [("request", .string("exec")), ("command", .array(command.map(JSONValue.string))),
                                              ("env", .array(environment.map(JSONValue.string))),
                                              ("interactive", .bool(arguments.has("--interactive"))), ("tty", .bool(arguments.has("--tty")))]
        if let workdir { request.append(("workdir", .string(workdir))) }
        let streams = context.streams
        try channel.send(.object(request), descriptors: [streams.input, streams.output, streams.error])
        let terminal = arguments.has("--tty") ? TerminalSettings.makeRaw(streams.input) : nil
        defer { terminal?.restore() }
        while true {
            let ready = HostSystem.waitReadable([channel.descriptor, signals.descriptor], milliseconds: -1)
            if ready.last == true {
                for number in signals.take() {
                    try? channel.send(.object([("request", .string("signal")), ("signal", .integer(number))]))
                }
            }
            guard ready.first == true else { continue }
            guard let (answer, extra) = try channel.receive() else {
                throw HyperError(.phaseFailed, "sandbox \(name): the supervisor went away before the command ended")
            }
            extra.forEach(HostSystem.closeDescriptor)
            switch answer.string("event") {
            case "started":
                continue
            case "ended":
                return Int32(clamping: answer.integer("code") ?? Int64(HyperCtl.failureExitCode))
            default:
                throw HyperError(.phaseFailed, "sandbox \(name): \(answer.string("message") ?? answer.compactText)")
            }
        }
    }
}
