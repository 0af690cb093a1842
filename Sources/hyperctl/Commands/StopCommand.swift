import Hyper

/// `hyperctl stop`: ends a sandbox's processes gracefully (SIGTERM, then SIGKILL after a grace period).
enum StopCommand: CLICommand {
    static let name = "stop"
    static let abstract = "Stop sandboxes: SIGTERM to their processes, SIGKILL after a grace period"
    static let usage = "stop [--time SECONDS] NAME [NAME...]"
    static let options: [OptionSpec] = [
        OptionSpec(["--time", "-t"], value: "SECONDS", help: "Grace period before the kill (default 10)"),
    ]
    static let discussion = "A stopped sandbox stays listed until hyperctl rm removes it."

    static func run(_ arguments: ParsedArguments, context: CommandContext) throws(HyperError) -> Int32 {
        guard !arguments.positionals.isEmpty else { throw HyperError(.invalidArgument, "stop: which sandbox? give its name") }
        var grace = SessionSupervisor.defaultGrace
        if let text = arguments.value("--time") {
            guard let seconds = Int64(text), seconds >= 0, seconds <= 3600 else {
                throw HyperError(.invalidArgument, "--time: \"\(text)\" is not a whole number of seconds from 0 to 3600")
            }
            grace = .seconds(seconds)
        }
        let client = SessionCLI.client()
        for name in arguments.positionals {
            try SessionStore.validateName(name)
            try client.stop(name, grace: grace)
            context.print(name + "\n")
        }
        return 0
    }
}
