#if os(Linux)
import CHyperKVM
import Glibc
import Hyper

/// An open /dev/kvm descriptor: the system-level KVM object (API version, extensions, VM creation).
///
/// The descriptor is closed when the value is dropped.
public struct KVMDevice: ~Copyable {
    /// The descriptor of /dev/kvm.
    public let descriptor: Int32

    /// Opens the KVM device.
    ///
    /// - Parameter path: the device node, /dev/kvm unless a test says otherwise.
    /// - Throws: `KVMError.systemCall` with the errno of `open`.
    public init(path: String = "/dev/kvm") throws(KVMError) {
        // SAFETY: open only reads the NUL-terminated path that Swift passes for the call.
        let fd = unsafe open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw KVMError.systemCall(operation: "open \(path)", errorNumber: errno) }
        descriptor = fd
    }

    deinit { close(descriptor) }

    /// Returns the KVM API version. The corresponding ioctl is `KVM_GET_API_VERSION`.
    public func apiVersion() throws(KVMError) -> Int32 {
        try KVMSystem.ioctl(descriptor, chyper_KVM_GET_API_VERSION(), value: 0, operation: "KVM_GET_API_VERSION")
    }

    /// Returns the value KVM reports for an extension (0 when absent). The corresponding ioctl is `KVM_CHECK_EXTENSION`.
    public func checkExtension(_ capability: Int32) -> Int32 {
        (try? KVMSystem.ioctl(descriptor, chyper_KVM_CHECK_EXTENSION(), value: UInt(capability), operation: "KVM_CHECK_EXTENSION")) ?? 0
    }
}

/// The raw ioctl funnel of HyperKVM: every KVM ioctl goes through here, retrying on `EINTR` where asked.
enum KVMSystem {
    /// Issues an ioctl whose argument is a plain integer and returns its non-negative result.
    static func ioctl(_ fd: Int32, _ request: UInt, value: UInt, operation: String) throws(KVMError) -> Int32 {
        while true {
            let result = chyper_ioctl_value(fd, request, value)
            if result >= 0 { return result }
            if errno == EINTR { continue }
            throw KVMError.systemCall(operation: operation, errorNumber: errno)
        }
    }
}
#endif

#if os(Linux)
extension KVMSystem {
    /// Issues an ioctl whose argument points at `value`, retrying on `EINTR`.
    static func ioctl<T>(_ fd: Int32, _ request: UInt, pointingTo value: inout T, operation: String) throws(KVMError) {
        while true {
            // SAFETY: `value` is a live, correctly sized struct for this request for the duration of the call.
            let result = unsafe withUnsafeMutablePointer(to: &value) { unsafe chyper_ioctl_pointer(fd, request, $0) }
            if result >= 0 { return }
            if errno == EINTR { continue }
            throw KVMError.systemCall(operation: operation, errorNumber: errno)
        }
    }
}
#endif
