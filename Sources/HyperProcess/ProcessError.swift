import Hyper

/// A failure of the process backend.
public enum ProcessError: Error, Equatable, Sendable, CustomStringConvertible, HyperErrorConvertible {
    /// The host lacks something the namespace sandbox needs.
    case unavailable(String)
    /// A host call failed while building or running the sandbox.
    case systemCall(operation: String, errorNumber: Int32)
    /// The sandbox could not be set up; the text says which step.
    case setupFailed(String)
    /// The operation is not built yet.
    case notImplemented(String)

    public var description: String {
        switch self {
        case let .unavailable(reason): return "process: unavailable: \(reason)"
        case let .systemCall(operation, number): return "process: \(operation) failed: \(HostSystem.errorText(number))"
        case let .setupFailed(step): return "process: sandbox setup failed: \(step)"
        case let .notImplemented(what): return "process: \(what) is not implemented by this backend yet"
        }
    }

    public var hyperError: HyperError {
        switch self {
        case .unavailable: return HyperError(.backendUnavailable, description)
        case .systemCall, .setupFailed: return HyperError(.hostFailure, description)
        case .notImplemented: return HyperError(.notImplemented, description)
        }
    }
}
