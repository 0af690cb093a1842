/// The JSON record of one sandbox run that `hyperctl run --report FILE` writes.
///
/// It holds the backend, the spec summary (never secret or environment values), the phase timeline and the
/// exit status. Keys are printed in a fixed order, so identical runs of a deterministic backend give
/// byte-identical reports.
public struct SandboxReport: Sendable {
    public var backend: String
    public var spec: SandboxSpec
    public var timeline: [PhaseEvent]
    public var status: SandboxExit?
    /// The error that ended the run, when it did not end with a status.
    public var failure: String?
    /// Backend-specific facts (for example the fake backend's seed).
    public var details: [(String, JSONValue)]

    /// Creates a report.
    public init(backend: String, spec: SandboxSpec, timeline: [PhaseEvent], status: SandboxExit?, failure: String? = nil,
                details: [(String, JSONValue)] = []) {
        self.backend = backend
        self.spec = spec
        self.timeline = timeline
        self.status = status
        self.failure = failure
        self.details = details
    }

    /// The report as a JSON value.
    public var json: JSONValue {
        var members: [(String, JSONValue)] = [
            ("hyperctl", .string(HyperRelease.version)),
            ("backend", .string(backend)),
        ]
        members.append(contentsOf: details)
        members.append(("spec", spec.summary))
        members.append(("timeline", .array(timeline.map { event in
            .object([("phase", .string(event.phase.rawValue)), ("ns", .integer(event.nanoseconds))])
        })))
        members.append(("exit", status?.summary ?? .null))
        if let failure { members.append(("error", .string(failure))) }
        return .object(members)
    }

    /// The report as JSON text with a trailing newline.
    public var text: String { json.formatted() + "\n" }
}
