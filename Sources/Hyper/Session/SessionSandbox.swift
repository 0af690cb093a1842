/// A command to run in a running session sandbox (`hyperctl exec`).
public struct SessionCommand: Equatable, Sendable {
    public var arguments: [String]
    /// Variables added to (or replacing) the spec's environment.
    public var environment: [EnvironmentVariable]
    /// The working directory inside; nil for the spec's (or the workspace).
    public var workingDirectory: String?
    /// Whether stdin is forwarded (otherwise the command reads /dev/null).
    public var interactive: Bool
    /// Whether the command gets a terminal of its own inside the sandbox.
    public var tty: Bool

    /// Creates a command.
    public init(arguments: [String], environment: [EnvironmentVariable] = [], workingDirectory: String? = nil,
                interactive: Bool = false, tty: Bool = false) {
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.interactive = interactive
        self.tty = tty
    }
}

/// A long-lived sandbox that runs many commands, one after another or at once (`hyperctl create`, `exec`).
/// Its supervisor process owns it; see docs/sessions.md.
public protocol SessionSandbox: AnyObject, Sendable {
    /// Starts a command in the sandbox with its standard streams on `streams` (which the backend may keep
    /// until the command ends); the handle waits for the command, signals it or kills it.
    func exec(_ command: SessionCommand, streams: StandardStreams) throws(HyperError) -> any SandboxHandle
    /// Asks every process in the sandbox to end (SIGTERM), kills what is left after `grace`, and returns
    /// when the sandbox is gone.
    func stop(grace: Duration)
    /// Waits until the sandbox ends (stopped, or its time limit passed).
    func waitUntilEnded()
    /// The memory its processes use now, in bytes, when the backend can tell.
    var memoryInUse: UInt64? { get }
    /// Whether the sandbox ended because its time limit passed (its commands then end with 124, as in `run`).
    var hasTimedOut: Bool { get }
    /// Writes the running sandbox to a snapshot folder (`hyperctl snapshot`) and lets it go on.
    func snapshot(to folder: String) throws(HyperError)
}

extension SessionSandbox {
    /// Backends without snapshots say so.
    public func snapshot(to folder: String) throws(HyperError) {
        throw HyperError(.unsupportedFeature, "snapshots need a microVM sandbox (--backend kvm)")
    }
}

extension SessionCommand {
    /// The command as a spec of `base` would run it: its arguments, environment and working directory.
    public func applied(to base: SandboxSpec) -> SandboxSpec {
        var spec = base
        spec.command = arguments
        for variable in environment { spec.setEnvironment(variable) }
        if let workingDirectory { spec.workingDirectory = workingDirectory }
        spec.interactive = interactive
        spec.tty = tty
        return spec
    }
}
