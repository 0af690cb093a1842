/// A phase of a sandbox's life, in the order a microVM goes through them.
///
/// Namespace sandboxes skip `booted` and `agentReady`; a timeline holds only the phases that happened.
public enum SandboxPhase: String, Sendable, CaseIterable, Equatable {
    /// The backend's resources exist (VMM process and memory, or namespaces).
    case created
    /// The guest kernel is up.
    case booted
    /// The guest agent answered on its control channel.
    case agentReady
    /// The command was started.
    case commandStarted
    /// The command ended.
    case exited

    /// Parses a phase name: the report spelling (`agentReady`), the flag spelling (`agent-ready`), or a verb (`boot`).
    public static func named(_ text: String) -> SandboxPhase? {
        let folded = text.replacingDashes()
        let aliases: [String: SandboxPhase] = ["create": .created, "boot": .booted, "agent": .agentReady, "start": .commandStarted, "exit": .exited]
        return aliases[folded] ?? allCases.first { $0.rawValue.lowercased() == folded }
    }

    /// The step that leads to this phase, in words (`boot` for `booted`).
    public var step: String {
        switch self {
        case .created: return "create"
        case .booted: return "boot"
        case .agentReady: return "agent start"
        case .commandStarted: return "command start"
        case .exited: return "command exit"
        }
    }

    /// The phase name as flags spell it (`agent-ready`).
    public var flagName: String {
        rawValue.reduce(into: "") { result, character in
            if character.isUppercase { result += "-" + character.lowercased() } else { result.append(character) }
        }
    }
}

extension String {
    fileprivate func replacingDashes() -> String { lowercased().split(separator: "-").joined() }
}

/// One entry of a sandbox's timeline: a phase and when it was reached.
public struct PhaseEvent: Equatable, Sendable {
    public var phase: SandboxPhase
    /// Nanoseconds since the launch began, on a monotonic clock (virtual for simulated backends).
    public var nanoseconds: UInt64

    /// Creates an event.
    public init(phase: SandboxPhase, nanoseconds: UInt64) {
        self.phase = phase
        self.nanoseconds = nanoseconds
    }
}

/// How a sandboxed command ended.
public enum SandboxExit: Equatable, Sendable {
    /// It exited with this code.
    case exited(Int32)
    /// It was killed by this signal.
    case signaled(Int32)
    /// The wall-clock limit passed and the sandbox was killed.
    case timedOut

    /// The exit code `hyperctl run` gives, following docker and podman: the code itself, 128+N for signal N, 124 on timeout.
    public var exitCode: Int32 {
        switch self {
        case let .exited(code): return code
        case let .signaled(signal): return 128 + signal
        case .timedOut: return 124
        }
    }

    /// The status as a report shows it.
    public var summary: JSONValue {
        switch self {
        case let .exited(code): return .object([("status", .string("exited")), ("code", .integer(code))])
        case let .signaled(signal): return .object([("status", .string("signaled")), ("signal", .integer(signal)), ("code", .integer(exitCode))])
        case .timedOut: return .object([("status", .string("timedOut")), ("code", .integer(exitCode))])
        }
    }
}

/// The host descriptors a sandboxed command's standard streams connect to.
///
/// The backend reads stdin from `input` (when the spec is interactive) and writes the command's output to
/// `output` and `error` untouched. The caller keeps ownership of the descriptors.
public struct StandardStreams: Equatable, Sendable {
    public var input: Int32
    public var output: Int32
    public var error: Int32

    /// Creates streams from three descriptors.
    public init(input: Int32, output: Int32, error: Int32) {
        self.input = input
        self.output = output
        self.error = error
    }

    /// The calling process's own standard streams.
    public static let inherited = StandardStreams(input: 0, output: 1, error: 2)
}

/// An injected failure, for testing how callers handle a phase that breaks.
///
/// Only backends with the `faultInjection` capability honor faults; others refuse a launch that asks for one.
public struct PhaseFault: Equatable, Sendable {
    /// What goes wrong in the phase.
    public enum Kind: String, Sendable, Equatable {
        /// The phase reports an error.
        case fail
        /// The phase never completes.
        case hang
    }

    public var phase: SandboxPhase
    public var kind: Kind

    /// Creates a fault.
    public init(phase: SandboxPhase, kind: Kind) {
        self.phase = phase
        self.kind = kind
    }

    /// Parses `PHASE` (a failure) or `PHASE:fail` / `PHASE:hang`.
    public static func parse(_ text: String) throws(HyperError) -> PhaseFault {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        let phases = SandboxPhase.allCases.map(\.flagName).joined(separator: ", ")
        guard let name = parts.first, let phase = SandboxPhase.named(name) else {
            throw HyperError(.invalidArgument, "fault: unknown phase \"\(parts.first ?? text)\" (phases: \(phases))")
        }
        guard parts.count == 2 else { return PhaseFault(phase: phase, kind: .fail) }
        guard let kind = Kind(rawValue: parts[1]) else {
            throw HyperError(.invalidArgument, "fault: unknown kind \"\(parts[1])\" (kinds: fail, hang)")
        }
        return PhaseFault(phase: phase, kind: kind)
    }
}

/// A disk image given to a microVM sandbox.
public struct DiskAttachment: Equatable, Sendable {
    public var path: String
    public var readOnly: Bool

    /// Creates an attachment.
    public init(path: String, readOnly: Bool) {
        self.path = path
        self.readOnly = readOnly
    }

    /// Parses `PATH` or `PATH:ro` / `PATH:rw`, making a relative path absolute against `base`.
    public static func parse(_ text: String, base: String) throws(HyperError) -> DiskAttachment {
        var path = text
        var readOnly = false
        if text.hasSuffix(":ro") || text.hasSuffix(":rw") {
            readOnly = text.hasSuffix(":ro")
            path = String(text.dropLast(3))
        }
        guard !path.isEmpty else { throw HyperError(.invalidArgument, "--disk: \"\(text)\" names no file (FILE[:ro])") }
        path = SandboxSpec.absolute(path, base: base)
        guard HostSystem.fileKind(at: path) == .regularFile else {
            throw HyperError(.invalidArgument, "--disk: \(path) is not a regular file")
        }
        return DiskAttachment(path: path, readOnly: readOnly)
    }
}

/// Settings of one launch that are not part of the policy.
public struct LaunchOptions: Sendable {
    /// Where the command's stdin, stdout and stderr go.
    public var streams: StandardStreams = .inherited
    /// The seed of simulated backends' randomness.
    public var seed: UInt64 = 0
    /// Injected faults; refused by backends without the `faultInjection` capability.
    public var faults: [PhaseFault] = []
    /// Lets a hardware-VM backend run on a host without hardware acceleration (very slow).
    public var allowUnaccelerated = false
    /// For microVM backends: the guest kernel and initramfs, instead of the default guest kit.
    public var kernelPath: String?
    public var initrdPath: String?
    /// For microVM backends: a file that gets a copy of the guest's serial console.
    public var guestConsolePath: String?
    /// For microVM backends: disk images attached as virtio-blk devices (/dev/vda, /dev/vdb... in order).
    public var disks: [DiskAttachment] = []
    /// For microVM backends: a snapshot folder to restore the sandbox from instead of booting.
    public var snapshotPath: String?
    /// For microVM backends: boot the guest even when a boot snapshot of it could be restored (the default
    /// start path; see `BootSnapshotCache`), and save none.
    public var coldBoot = false
    /// The sandbox's hostname: a session's is its name; nil for `defaultHostname`.
    public var hostname: String?
    /// Every backend's hostname when the options name none.
    public static let defaultHostname = "sandbox"

    /// Creates default options.
    public init() {}
}

/// Signals sent to hyperctl that a backend relays to the sandboxed command (a terminal's ^C, a `kill`).
public protocol SignalRelay: AnyObject, Sendable {
    /// A descriptor that polls readable while signals are pending.
    var descriptor: Int32 { get }
    /// Takes the pending signals.
    func take() -> [Int32]
}

/// A running (or finished) sandbox, as a backend's `launch` returns it.
///
/// Implementations are thread-safe: `signal` may be called from another thread while one thread waits.
public protocol SandboxHandle: AnyObject, Sendable {
    /// The streams the command is connected to.
    var streams: StandardStreams { get }
    /// Waits for the command to end and returns how it ended. Calling it again returns the same status.
    func wait() throws(HyperError) -> SandboxExit
    /// Sends a signal to the sandboxed command.
    func signal(_ number: Int32) throws(HyperError)
    /// Kills the whole sandbox at once.
    func kill() throws(HyperError)
    /// The phases reached so far, in order.
    var timeline: [PhaseEvent] { get }
    /// Backend-specific facts for the report (the guest's own boot times, for example).
    var reportDetails: [(String, JSONValue)] { get }
}

extension SandboxHandle {
    public var reportDetails: [(String, JSONValue)] { [] }
}
