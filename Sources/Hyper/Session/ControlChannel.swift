import CHyperHost
#if canImport(Glibc)
import Glibc
#endif

/// One connection on a session's control socket: JSON objects, one per line, with descriptors passed
/// alongside (`hyperctl exec` hands its standard streams to the supervisor this way, so a command's output
/// goes straight to the caller's terminal or pipe). `docs/sessions.md` lists the messages. Any thread may
/// send; one thread at a time receives.
public final class ControlChannel: @unchecked Sendable {
    /// The longest line either side accepts.
    public static let maximumLine = 1 << 20

    public let descriptor: Int32
    private var buffer: [UInt8] = []
    private var received: [Int32] = []
    private let sending = Locked<Bool>(false)

    /// Takes ownership of a connected socket.
    public init(descriptor: Int32) {
        self.descriptor = descriptor
    }

    deinit {
        HostSystem.closeDescriptor(descriptor)
        for fd in received { HostSystem.closeDescriptor(fd) }
    }

    /// Connects to the control socket at `path`.
    public static func connect(_ path: String) throws(HyperError) -> ControlChannel {
        do {
            return ControlChannel(descriptor: try HostSockets.connectUnix(path))
        } catch {
            throw HyperError(.hostFailure, "cannot reach the sandbox's supervisor: \(HostSystem.errorText(error.errorNumber))")
        }
    }

    /// Sends one message, with `descriptors` attached to its first byte. Safe from several threads.
    public func send(_ message: JSONValue, descriptors: [Int32] = []) throws(HyperError) {
        let bytes = Array((message.compactText + "\n").utf8)
        let failure: Int32? = sending.withLock { _ in
            var offset = 0
            while offset < bytes.count {
                let attached = offset == 0 ? descriptors : []
                // SAFETY: the pointers cover the arrays' live storage for the duration of the call.
                let sent = unsafe bytes.withUnsafeBytes { raw in
                    unsafe attached.withUnsafeBufferPointer { fds in
                        unsafe chyper_send_with_descriptors(descriptor, raw.baseAddress! + offset, raw.count - offset, fds.baseAddress, Int32(fds.count))
                    }
                }
                if sent < 0 { return errno }
                offset += sent
            }
            return nil
        }
        if let failure { throw HyperError(.hostFailure, "control socket: \(HostSystem.errorText(failure))") }
    }

    /// Receives the next message and the descriptors that came with it; nil at the end of the stream.
    /// With `timeoutMilliseconds`, a peer silent that long is an error.
    public func receive(timeoutMilliseconds: Int32? = nil) throws(HyperError) -> (message: JSONValue, descriptors: [Int32])? {
        while true {
            if let newline = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                let descriptors = received
                received = []
                do {
                    return (try JSONValue.parse(line), descriptors)
                } catch {
                    descriptors.forEach(HostSystem.closeDescriptor)
                    throw HyperError(.invalidArgument, "control socket: a message that is not JSON (\(error))")
                }
            }
            guard buffer.count < Self.maximumLine else { throw HyperError(.invalidArgument, "control socket: a message over 1 MiB") }
            if let timeoutMilliseconds, HostSystem.waitReadable([descriptor], milliseconds: timeoutMilliseconds) == [false] {
                throw HyperError(.hostFailure, "control socket: no answer from the supervisor in \(timeoutMilliseconds) ms")
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            var fds = [Int32](repeating: -1, count: Int(CHYPER_MAX_PASSED_DESCRIPTORS))
            var count: Int32 = 0
            // SAFETY: the buffers hold `chunk.count` bytes and `fds.count` descriptors; the call writes no more.
            let got = unsafe chunk.withUnsafeMutableBytes { raw in
                unsafe fds.withUnsafeMutableBufferPointer { slots in
                    unsafe chyper_receive_with_descriptors(descriptor, raw.baseAddress, raw.count, slots.baseAddress, Int32(slots.count), &count)
                }
            }
            received += fds.prefix(Int(count))
            if got < 0 { throw HyperError(.hostFailure, "control socket: \(HostSystem.errorText(errno))") }
            if got == 0 { return nil }
            buffer += chunk[..<got]
        }
    }

    /// The connected peer's user id.
    public func peerUserID() -> UInt32? {
        var uid: UInt32 = 0
        var pid: Int32 = 0
        // SAFETY: the call writes one unsigned and one int into the locals.
        return unsafe chyper_peer_credentials(descriptor, &uid, &pid) == 0 ? uid : nil
    }
}

extension JSONValue {
    /// The member as a string, if it is one.
    public func string(_ key: String) -> String? {
        if case let .string(text)? = self[key] { return text }
        return nil
    }

    /// The member as a whole number, if it is one.
    public func integer(_ key: String) -> Int64? {
        if case let .number(value)? = self[key], value == value.rounded(), abs(value) < 9e15 { return Int64(value) }
        return nil
    }

    /// The member as a boolean, if it is one.
    public func bool(_ key: String) -> Bool? {
        if case let .bool(value)? = self[key] { return value }
        return nil
    }

    /// The member as a list of strings, if it is one.
    public func strings(_ key: String) -> [String]? {
        guard case let .array(items)? = self[key] else { return nil }
        var list: [String] = []
        for item in items {
            guard case let .string(text) = item else { return nil }
            list.append(text)
        }
        return list
    }
}
