import Hyper

/// What a simulated command did: its output, its exit code and how much virtual time it took.
public struct FakeCommandResult: Equatable, Sendable {
    public var output: [UInt8] = []
    public var errorOutput: [UInt8] = []
    public var exitCode: Int32 = 0
    /// Virtual nanoseconds the command itself ran (for `sleep`).
    public var duration: UInt64 = 0
}

/// The fake backend's fixed command set: `echo`, `true`, `false`, `exit N`, `sleep D` and `cat FILE...`.
///
/// Nothing here starts a host process. `cat` reads host files only through the spec's workspace and mounts,
/// mapped to the paths the sandbox would see them at.
public struct FakeCommands: Sendable {
    /// The commands this simulation understands.
    public static let names = ["echo", "true", "false", "exit", "sleep", "cat"]

    let spec: SandboxSpec

    /// Creates an interpreter for a spec's view of the file system.
    public init(spec: SandboxSpec) { self.spec = spec }

    /// Runs `argv`; `readInput` supplies stdin for `cat` without arguments.
    public func run(_ argv: [String], readInput: () -> [UInt8]) -> FakeCommandResult {
        var result = FakeCommandResult()
        guard let program = argv.first else { return result }
        let arguments = Array(argv.dropFirst())
        switch program {
        case "true":
            break
        case "false":
            result.exitCode = 1
        case "echo":
            var words = arguments
            var newline = true
            if words.first == "-n" { newline = false; words.removeFirst() }
            result.output = Array((words.joined(separator: " ") + (newline ? "\n" : "")).utf8)
        case "exit":
            if let text = arguments.first {
                if let code = Int32(text), (0...255).contains(code) {
                    result.exitCode = code
                } else {
                    result.errorOutput = Array("exit: \(text): numeric argument required (0-255)\n".utf8)
                    result.exitCode = 2
                }
            }
        case "sleep":
            guard arguments.count == 1, let duration = Units.parseDuration(arguments[0]) else {
                result.errorOutput = Array("sleep: invalid time interval \"\(arguments.joined(separator: " "))\"\n".utf8)
                result.exitCode = 1
                return result
            }
            result.duration = UInt64(duration.nanoseconds)
        case "cat":
            if arguments.isEmpty {
                result.output = spec.interactive ? readInput() : []
            }
            for path in arguments {
                guard let hostPath = hostPath(for: path), let bytes = try? HostSystem.readFile(hostPath) else {
                    result.errorOutput += Array("cat: \(path): No such file or directory\n".utf8)
                    result.exitCode = 1
                    continue
                }
                result.output += bytes
            }
        default:
            result.errorOutput = Array("\(program): command not found (the fake backend simulates only \(Self.names.joined(separator: ", ")))\n".utf8)
            result.exitCode = 127
        }
        return result
    }

    /// Maps a path inside the simulated sandbox to the host file behind it, or nil when nothing is mounted there.
    public func hostPath(for path: String) -> String? {
        let base = spec.workingDirectory ?? spec.workspace
        let absolute = SandboxSpec.absolute(path, base: base)
        guard !absolute.split(separator: "/").contains("..") else { return nil }
        let views = [(spec.workspace, spec.workspace)] + spec.mounts.map { ($0.destination, $0.source) }
        for (inside, host) in views.sorted(by: { $0.0.count > $1.0.count }) {
            if absolute == inside { return host }
            if absolute.hasPrefix(inside == "/" ? "/" : inside + "/") {
                return host + "/" + absolute.dropFirst(inside.count).drop { $0 == "/" }
            }
        }
        return nil
    }
}
