import Hyper

/// What the session commands (create, exec, ps, stop, rm) share: the store, the sweep of leftovers, names.
enum SessionCLI {
    /// The hidden subcommand that becomes a sandbox's supervisor.
    static let superviseCommand = "supervise"

    static func client() -> SessionClient { SessionClient(store: SessionStore.standard()) }

    /// Removes what crashed sandboxes left behind (every backend's own leftovers); run at the start of each
    /// session command.
    static func sweep(_ context: CommandContext) {
        for backend in context.registry.backends { backend.sweepLeftovers() }
    }

    /// The one positional: the sandbox's name.
    static func name(_ arguments: ParsedArguments, command: String) throws(HyperError) -> String {
        guard let name = arguments.positionals.first else { throw HyperError(.invalidArgument, "\(command): which sandbox? give its name") }
        guard arguments.positionals.count == 1 || command == "exec" else {
            throw HyperError(.invalidArgument, "\(command): one sandbox name, got \(arguments.positionals.count) arguments")
        }
        try SessionStore.validateName(name)
        return name
    }

    /// A new name: `sandbox-` and eight random hex digits.
    static func generatedName() throws(HyperError) -> String {
        "sandbox-" + (try HostRandom().hex(bytes: 4))
    }

    /// Seconds as `ps` shows an age: `42s`, `5m`, `3h`, `2d`.
    static func age(_ seconds: Int64) -> String {
        switch seconds {
        case ..<60: return "\(max(0, seconds))s"
        case ..<3600: return "\(seconds / 60)m"
        case ..<86400: return "\(seconds / 3600)h"
        default: return "\(seconds / 86400)d"
        }
    }
}
