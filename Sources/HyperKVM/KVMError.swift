import Hyper

/// A failure of the KVM accelerator or the kvm backend.
public enum KVMError: Error, Equatable, Sendable, CustomStringConvertible, HyperErrorConvertible {
    /// An ioctl or syscall failed with this errno.
    case systemCall(operation: String, errorNumber: Int32)
    /// The host cannot run KVM guests; the text says why.
    case unavailable(String)
    /// The host's KVM is software-emulated and the caller did not allow that.
    case unaccelerated(String)
    /// The operation is not built yet.
    case notImplemented(String)

    public var description: String {
        switch self {
        case let .systemCall(operation, number): return "kvm: \(operation) failed: \(HostSystem.errorText(number))"
        case let .unavailable(reason): return "kvm: unavailable: \(reason)"
        case let .unaccelerated(reason):
            return "kvm: \(reason). Guest kernel code would run about 1000x slower; "
                + "use --backend process, or pass --allow-unaccelerated to run anyway"
        case let .notImplemented(what): return "kvm: \(what) is not implemented by this backend yet"
        }
    }

    public var hyperError: HyperError {
        switch self {
        case .systemCall: return HyperError(.hostFailure, description)
        case .unavailable, .unaccelerated: return HyperError(.backendUnavailable, description)
        case .notImplemented: return HyperError(.notImplemented, description)
        }
    }
}
