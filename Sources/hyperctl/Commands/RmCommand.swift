import Hyper

/// `hyperctl rm`: removes stopped or dead sandboxes and everything they held; `-f` stops running ones first.
enum RmCommand: CLICommand {
    static let name = "rm"
    static let abstract = "Remove sandboxes and free everything they hold (-f: stop running ones first)"
    static let usage = "rm [-f] NAME [NAME...]"
    static let options: [OptionSpec] = [
        OptionSpec(["--force", "-f"], help: "Kill a running sandbox (no grace period) and remove it"),
    ]

    static func run(_ arguments: ParsedArguments, context: CommandContext) throws(HyperError) -> Int32 {
        guard !arguments.positionals.isEmpty else { throw HyperError(.invalidArgument, "rm: which sandbox? give its name") }
        let client = SessionCLI.client()
        for name in arguments.positionals {
            try SessionStore.validateName(name)
            guard client.exists(name) else { throw HyperError(.invalidArgument, "no sandbox named \(name) (hyperctl ps lists them)") }
            if let record = client.store.record(name), record.state != .stopped, record.supervisorIsAlive {
                guard arguments.has("--force") else {
                    throw HyperError(.invalidArgument, "sandbox \(name) is running; stop it first (hyperctl stop \(name)) or use rm -f")
                }
                try? client.stop(name, grace: .zero)
            }
            client.remove(name)
            context.print(name + "\n")
        }
        SessionCLI.sweep(context)
        return 0
    }
}
