/// The core's error: what went wrong, in a sentence a user can act on.
///
/// Every failure that the core reports is a `HyperError`. Backends have their own error types,
/// which convert into this one at the backend boundary so that `hyperctl` maps all of them the same way.
public struct HyperError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The kind of failure, for callers that branch on it (exit codes, retries, tests).
    public enum Code: String, Sendable, Equatable {
        /// The sandbox spec (file or flags) is wrong; the message names the field and value.
        case invalidSpec
        /// A command-line argument is wrong.
        case invalidArgument
        /// No backend has the requested name.
        case unknownBackend
        /// The backend cannot run on this host; the message says why.
        case backendUnavailable
        /// The spec asks for a feature the backend does not enforce.
        case unsupportedFeature
        /// The backend does not implement this operation.
        case notImplemented
        /// A sandbox lifecycle phase failed.
        case phaseFailed
        /// A host resource (file, process, device) failed.
        case hostFailure
    }

    public var code: Code
    public var message: String

    /// Creates an error with a code and a message.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// A module error that can be reported as a `HyperError`.
///
/// Each backend module has one error type; conforming to this protocol lets the CLI and the core
/// handle all of them uniformly.
public protocol HyperErrorConvertible: Error {
    /// Returns this error as a core error.
    var hyperError: HyperError { get }
}

extension HyperError: HyperErrorConvertible {
    public var hyperError: HyperError { self }
}
