import Glibc
import HyperAgentProtocol

/// A failure inside the guest agent; it goes to the host as a `failure` message.
enum AgentError: Error, CustomStringConvertible {
    case system(String, Int32)
    case protocolViolation(String)
    case transfer(AgentProtocolError)
    /// The guest cannot be set up as the host asked; the text says why.
    case setup(String)

    var description: String {
        switch self {
        case let .system(operation, number): return "guest agent: \(operation): \(FileTree.errorText(number))"
        case let .protocolViolation(text): return "guest agent: \(text)"
        case let .transfer(error): return "guest agent: \(error)"
        case let .setup(text): return "guest agent: \(text)"
        }
    }
}
