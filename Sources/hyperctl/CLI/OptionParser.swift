import Hyper

/// One option a subcommand accepts.
struct OptionSpec: Sendable {
    /// Spellings, long first (`--memory`, `-m`).
    let names: [String]
    /// The value's placeholder in help (`SIZE`), or nil for a flag.
    let valueName: String?
    /// Whether it may be given more than once.
    let repeatable: Bool
    let help: String

    init(_ names: [String], value: String? = nil, repeatable: Bool = false, help: String) {
        self.names = names
        self.valueName = value
        self.repeatable = repeatable
        self.help = help
    }

    var key: String { names[0] }
}

/// The options and positional arguments of one command line, after parsing.
struct ParsedArguments: Sendable {
    private(set) var values: [String: [String]] = [:]
    /// Arguments that are not options, in order (for `run`, the command and its arguments).
    var positionals: [String] = []

    mutating func add(_ key: String, _ value: String) { values[key, default: []].append(value) }

    /// Returns whether a flag was given.
    func has(_ key: String) -> Bool { values[key] != nil }
    /// Returns the last value of an option.
    func value(_ key: String) -> String? { values[key]?.last }
    /// Returns every value of a repeatable option, in order.
    func all(_ key: String) -> [String] { values[key] ?? [] }
}

/// Parses command lines the way docker and podman do: `--opt value`, `--opt=value`, `-x value`, bundled short
/// flags (`-it`), and `--` to end the options. With `stopAtFirstPositional`, everything from the first
/// non-option argument on is positional, so a sandboxed command's own flags are left alone.
struct OptionParser: Sendable {
    let options: [OptionSpec]
    let stopAtFirstPositional: Bool

    func parse(_ arguments: [String]) throws(HyperError) -> ParsedArguments {
        var parsed = ParsedArguments()
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if argument == "--" {
                parsed.positionals.append(contentsOf: arguments[index...])
                break
            }
            guard argument.hasPrefix("-"), argument.count > 1 else {
                parsed.positionals.append(argument)
                if stopAtFirstPositional {
                    parsed.positionals.append(contentsOf: arguments[index...])
                    break
                }
                continue
            }
            if argument.hasPrefix("--") {
                var name = argument
                var inlineValue: String?
                if let equals = argument.firstIndex(of: "=") {
                    name = String(argument[..<equals])
                    inlineValue = String(argument[argument.index(after: equals)...])
                }
                let option = try lookup(name)
                if option.valueName != nil {
                    let value: String
                    if let inlineValue {
                        value = inlineValue
                    } else {
                        guard index < arguments.count else { throw missingValue(option) }
                        value = arguments[index]
                        index += 1
                    }
                    try add(value, for: option, to: &parsed)
                } else {
                    guard inlineValue == nil else {
                        throw HyperError(.invalidArgument, "\(name) takes no value")
                    }
                    try add("", for: option, to: &parsed)
                }
                continue
            }
            // Short options, possibly bundled (-it) or with an attached value (-m64M).
            var letters = Substring(argument.dropFirst())
            while let letter = letters.first {
                letters = letters.dropFirst()
                let option = try lookup("-\(letter)")
                if option.valueName == nil {
                    try add("", for: option, to: &parsed)
                    continue
                }
                if !letters.isEmpty {
                    try add(String(letters), for: option, to: &parsed)
                } else {
                    guard index < arguments.count else { throw missingValue(option) }
                    try add(arguments[index], for: option, to: &parsed)
                    index += 1
                }
                break
            }
        }
        return parsed
    }

    private func lookup(_ name: String) throws(HyperError) -> OptionSpec {
        guard let option = options.first(where: { $0.names.contains(name) }) else {
            throw HyperError(.invalidArgument, "unknown option \(name) (see --help)")
        }
        return option
    }

    private func add(_ value: String, for option: OptionSpec, to parsed: inout ParsedArguments) throws(HyperError) {
        if !option.repeatable, parsed.has(option.key), option.valueName != nil {
            throw HyperError(.invalidArgument, "\(option.key) is given more than once")
        }
        parsed.add(option.key, value)
    }

    private func missingValue(_ option: OptionSpec) -> HyperError {
        HyperError(.invalidArgument, "\(option.key) needs a value (\(option.valueName ?? "VALUE"))")
    }

    /// Returns the help text listing the options.
    func helpText() -> String {
        let rows = options.map { option -> (String, String) in
            let spelled = option.names.joined(separator: ", ") + (option.valueName.map { " \($0)" } ?? "")
            return (spelled, option.help + (option.repeatable ? " (repeatable)" : ""))
        }
        let width = min(34, (rows.map(\.0.count).max() ?? 0) + 2)
        return rows.map { spelled, help in
            let padding = spelled.count < width ? String(repeating: " ", count: width - spelled.count) : "\n" + String(repeating: " ", count: width + 2)
            return "  " + spelled + padding + help
        }.joined(separator: "\n")
    }
}
