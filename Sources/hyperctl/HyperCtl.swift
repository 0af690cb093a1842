import Hyper

/// The hyperctl command line: finds the subcommand, runs it, and turns every failure into exit code 125.
enum HyperCtl {
    /// The subcommands, in the order `hyperctl --help` lists them.
    static var commands: [any CLICommand.Type] {
        [RunCommand.self, CreateCommand.self, ExecCommand.self, PsCommand.self, StopCommand.self, RmCommand.self, SnapshotCommand.self,
         BootCommand.self, BackendsCommand.self, BenchCommand.self, VersionCommand.self]
    }
    /// Subcommands that hyperctl runs itself and `--help` does not list.
    static var internalCommands: [any CLICommand.Type] { [SuperviseCommand.self] }

    /// The exit code for failures of hyperctl itself or of the sandbox, bad input included (docker's convention).
    static let failureExitCode: Int32 = 125

    /// Runs a command line (without the program name) and returns the exit code.
    static func main(arguments: [String], context: CommandContext) -> Int32 {
        guard let word = arguments.first else {
            context.print(helpText)
            return failureExitCode
        }
        switch word {
        case "--help", "-h", "help":
            if word == "help", arguments.count > 1 {
                return main(arguments: [arguments[1], "--help"], context: context)
            }
            context.print(helpText)
            return 0
        case "--version":
            return main(arguments: ["version"], context: context)
        default:
            break
        }
        guard let command = (commands + internalCommands).first(where: { $0.name == word }) else {
            context.note("unknown command \"\(word)\"; commands: \(commands.map { $0.name }.joined(separator: ", "))")
            return failureExitCode
        }
        do {
            let parsed = try command.parser.parse(Array(arguments.dropFirst()))
            if parsed.has("--help") {
                context.print(command.helpText)
                return 0
            }
            return try command.run(parsed, context: context)
        } catch {
            context.note(error.message)
            return failureExitCode
        }
    }

    static var helpText: String {
        let width = (commands.map { $0.name.count }.max() ?? 0) + 2
        let list = commands.map { command in
            "  " + command.name + String(repeating: " ", count: width - command.name.count) + command.abstract
        }.joined(separator: "\n")
        return """
        Usage: hyperctl COMMAND [OPTIONS]

        A sandbox hypervisor for AI coding agents: run commands in a microVM or namespace sandbox whose
        files, network, secrets and resources are fixed before the command starts.

        Commands:
        \(list)

        Run 'hyperctl COMMAND --help' for a command's options.
        Exit codes: the command's own; 124 timeout; 125 hyperctl or sandbox failure; 126 not executable;
        127 not found; 128+N killed by signal N.

        """
    }
}
