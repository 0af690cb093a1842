import Hyper

/// `hyperctl ps`: lists the session sandboxes of this user.
enum PsCommand: CLICommand {
    static let name = "ps"
    static let abstract = "List sandboxes: name, backend, state, age, commands, memory"
    static let usage = "ps [--json]"
    static let options: [OptionSpec] = [
        OptionSpec(["--json"], help: "Print a JSON array instead of a table"),
    ]
    static let discussion = """
    STATE is running, stopped (hyperctl stop, or its time limit), or dead: its supervisor is gone
    without stopping it (hyperctl rm cleans it up). MEMORY is what its processes use now.
    """

    static func run(_ arguments: ParsedArguments, context: CommandContext) throws(HyperError) -> Int32 {
        guard arguments.positionals.isEmpty else { throw HyperError(.invalidArgument, "ps takes no arguments") }
        SessionCLI.sweep(context)
        let listings = SessionCLI.client().list()
        let now = HostSystem.wallClockSeconds()
        if arguments.has("--json") {
            let items: [JSONValue] = listings.map { item in
                .object([("name", .string(item.name)), ("backend", .string(item.backend)), ("state", .string(item.state)),
                         ("createdSeconds", item.createdSeconds.map { .integer($0) } ?? .null),
                         ("commands", item.commands.map { .integer($0) } ?? .null),
                         ("runningCommands", item.runningCommands.map { .integer($0) } ?? .null),
                         ("memoryBytes", item.memoryBytes.map { .integer($0) } ?? .null)])
            }
            context.print(JSONValue.array(items).formatted() + "\n")
            return 0
        }
        var rows = [["NAME", "BACKEND", "STATE", "AGE", "COMMANDS", "MEMORY"]]
        for item in listings {
            rows.append([item.name, item.backend, item.state, item.createdSeconds.map { SessionCLI.age(now - $0) } ?? "-",
                         item.commands.map { String($0) + (item.runningCommands.map { $0 > 0 ? " (\($0) running)" : "" } ?? "") } ?? "-",
                         item.memoryBytes.map { Units.formatRoundedSize($0) } ?? "-"])
        }
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            let padded = row.enumerated().map { column, text in
                column == row.count - 1 ? text : text + String(repeating: " ", count: widths[column] - text.count + 2)
            }
            context.print(padded.joined() + "\n")
        }
        return 0
    }
}
