import Hyper

/// What every subcommand gets: the backends of this build, where output goes, and the caller's directory.
struct CommandContext: Sendable {
    var registry: BackendRegistry
    var streams: StandardStreams
    var currentDirectory: String

    /// Writes text to standard output.
    func print(_ text: String) {
        try? HostSystem.writeAll(streams.output, Array(text.utf8))
    }

    /// Writes a hyperctl message to standard error.
    func note(_ text: String) {
        try? HostSystem.writeAll(streams.error, Array("hyperctl: \(text)\n".utf8))
    }
}

/// A hyperctl subcommand: one file under Commands/ each.
protocol CLICommand {
    /// The word that selects it (`run`).
    static var name: String { get }
    /// One line for the command list.
    static var abstract: String { get }
    /// The usage line(s) after `hyperctl`.
    static var usage: String { get }
    /// More text for `--help`, after the options.
    static var discussion: String { get }
    /// The options it accepts (`--help` is added for all).
    static var options: [OptionSpec] { get }
    /// Whether option parsing stops at the first positional (the start of a command to run).
    static var optionsEndAtCommand: Bool { get }
    /// Runs it and returns the process exit code.
    static func run(_ arguments: ParsedArguments, context: CommandContext) throws(HyperError) -> Int32
}

extension CLICommand {
    static var discussion: String { "" }
    static var optionsEndAtCommand: Bool { false }

    static var parser: OptionParser {
        OptionParser(options: options + [OptionSpec(["--help", "-h"], help: "Show this help")],
                     stopAtFirstPositional: optionsEndAtCommand)
    }

    static var helpText: String {
        var text = "Usage: hyperctl \(usage)\n\n\(abstract)\n\nOptions:\n\(parser.helpText())\n"
        if !discussion.isEmpty { text += "\n\(discussion)\n" }
        return text
    }
}
