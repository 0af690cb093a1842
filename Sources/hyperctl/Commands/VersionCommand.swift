import Hyper

/// `hyperctl version`: prints the version.
enum VersionCommand: CLICommand {
    static let name = "version"
    static let abstract = "Print hyperctl's version"
    static let usage = "version"
    static let options: [OptionSpec] = []

    static func run(_ arguments: ParsedArguments, context: CommandContext) throws(HyperError) -> Int32 {
        guard arguments.positionals.isEmpty else {
            throw HyperError(.invalidArgument, "version takes no arguments")
        }
        context.print("hyperctl \(HyperRelease.version)\n")
        return 0
    }
}
