import Hyper

/// `hyperctl backends`: what each backend can do on this host, and why.
enum BackendsCommand: CLICommand {
    static let name = "backends"
    static let abstract = "List the backends and whether they work on this host"
    static let usage = "backends [--json]"
    static let options = [OptionSpec(["--json"], help: "Print a JSON array of {name, available, isolation, accelerated, reason}")]
    static let discussion = "'accelerated' applies to hardware-VM backends only; auto never picks an unaccelerated kvm or the fake backend."

    static func run(_ arguments: ParsedArguments, context: CommandContext) throws(HyperError) -> Int32 {
        guard arguments.positionals.isEmpty else {
            throw HyperError(.invalidArgument, "backends takes no arguments")
        }
        let rows = context.registry.backends.map { backend in (backend, backend.probe()) }
        if arguments.has("--json") {
            let json = JSONValue.array(rows.map { backend, probe in
                .object([
                    ("name", .string(backend.name)),
                    ("available", .bool(probe.isAvailable)),
                    ("isolation", .string(backend.isolation.name)),
                    ("accelerated", probe.isAccelerated.map(JSONValue.bool) ?? .null),
                    ("reason", .string(probe.reason)),
                ])
            })
            context.print(json.formatted() + "\n")
            return 0
        }
        var table = [["NAME", "AVAILABLE", "ISOLATION", "ACCELERATED", "REASON"]]
        for (backend, probe) in rows {
            table.append([
                backend.name,
                probe.isAvailable ? "yes" : "no",
                backend.isolation.name,
                probe.isAccelerated.map { $0 ? "yes" : "no" } ?? "-",
                probe.reason,
            ])
        }
        context.print(formatTable(table))
        return 0
    }

    /// Returns rows as left-aligned columns; the last column is not padded.
    static func formatTable(_ rows: [[String]]) -> String {
        guard let columns = rows.first?.count else { return "" }
        let widths = (0..<columns).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { column, cell in
                column == columns - 1 ? cell : cell + String(repeating: " ", count: widths[column] - cell.count + 2)
            }.joined()
        }.joined(separator: "\n") + "\n"
    }
}
