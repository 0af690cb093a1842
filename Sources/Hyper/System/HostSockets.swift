#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address, as 4 or 16 bytes in network order.
public struct IPAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// Parses a textual IPv4 or IPv6 address (no brackets, no port); nil for anything else.
    public init?(_ text: String) {
        var buffer = [UInt8](repeating: 0, count: 16)
        // SAFETY: inet_pton writes at most 4 (AF_INET) or 16 (AF_INET6) bytes into the 16-byte buffer.
        if unsafe inet_pton(AF_INET, text, &buffer) == 1 {
            bytes = Array(buffer[0..<4])
        } else if unsafe inet_pton(AF_INET6, text, &buffer) == 1 {
            bytes = buffer
        } else {
            return nil
        }
    }

    /// Wraps raw bytes (4 or 16).
    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    public var isIPv4: Bool { bytes.count == 4 }

    /// The IPv4 address an IPv4-mapped IPv6 address (::ffff:a.b.c.d) stands for, else self.
    public var unmapped: IPAddress {
        guard bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF else { return self }
        return IPAddress(bytes: Array(bytes[12..<16])) ?? self
    }

    public var description: String {
        var text = [CChar](repeating: 0, count: 64)
        // SAFETY: inet_ntop reads 4 or 16 bytes from `bytes` and writes at most 64 bytes, NUL-terminated.
        _ = unsafe bytes.withUnsafeBytes { raw in unsafe inet_ntop(isIPv4 ? AF_INET : AF_INET6, raw.baseAddress, &text, 64) }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Stream sockets for the egress proxy: a Unix listener, TCP connections and name resolution.
public enum HostSockets {
    /// A new Unix stream socket and the address of `path`.
    private static func unixSocket(_ path: String, operation: String) throws(HostCallError) -> (Int32, sockaddr_un) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw HostCallError(operation: operation, subject: path, errorNumber: ENAMETOOLONG)
        }
        // SAFETY: copies the path (shorter than sun_path, checked) into the local sockaddr_un's zeroed array.
        unsafe withUnsafeMutableBytes(of: &address.sun_path) { raw in unsafe raw.copyBytes(from: bytes) }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HostCallError(operation: "create a socket for", subject: path, errorNumber: errno) }
        return (fd, address)
    }

    /// Listens on a Unix stream socket at `path` (replacing a stale one) with `mode` (by default any local
    /// user may connect to it).
    public static func listenUnix(_ path: String, mode: UInt32 = 0o666) throws(HostCallError) -> Int32 {
        var (fd, address) = try unixSocket(path, operation: "bind")
        HostSystem.removeQuietly(path)
        // SAFETY: bind reads a sockaddr_un of the given size from the local.
        let bound = unsafe withUnsafePointer(to: &address) { pointer in
            unsafe pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { unsafe bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else {
            let number = errno
            close(fd)
            throw HostCallError(operation: "listen on", subject: path, errorNumber: number)
        }
        HostSystem.setMode(path, mode)
        return fd
    }

    /// Listens on 127.0.0.1 at `port` (0: any free port); returns the descriptor and the port.
    public static func listenLoopbackTCP(port: UInt16 = 0) throws(HostCallError) -> (descriptor: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HostCallError(operation: "create a socket for", subject: "127.0.0.1", errorNumber: errno) }
        var one: Int32 = 1
        // SAFETY: setsockopt reads one Int32 from the local.
        _ = unsafe setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(4))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        // SAFETY: bind and getsockname read or write one sockaddr_in in the local.
        let bound = unsafe withUnsafeMutablePointer(to: &address) { pointer in
            unsafe pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { unsafe bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound, listen(fd, 64) == 0 else {
            let number = errno
            close(fd)
            throw HostCallError(operation: "listen on", subject: "127.0.0.1:\(port)", errorNumber: number)
        }
        return (fd, UInt16(bigEndian: address.sin_port))
    }

    /// A connected pair of Unix stream sockets, closed on exec.
    public static func socketPair() throws(HostCallError) -> (Int32, Int32) {
        var ends: [Int32] = [-1, -1]
        // SAFETY: socketpair writes exactly two descriptors into the two-element array.
        guard unsafe socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else {
            throw HostCallError(operation: "create", subject: "a socket pair", errorNumber: errno)
        }
        return (ends[0], ends[1])
    }

    /// Sends all of `bytes` on a socket, blocking as needed; a closed peer is an error, never SIGPIPE.
    public static func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws(HostCallError) {
        var offset = 0
        while offset < bytes.count {
            offset += try sendOnce(fd, bytes[offset...], flags: Int32(MSG_NOSIGNAL)) ?? 0
        }
    }

    /// Sends what the socket takes now without blocking: the count sent, 0 when its buffer is full.
    public static func sendAvailable(_ fd: Int32, _ bytes: ArraySlice<UInt8>) throws(HostCallError) -> Int {
        try sendOnce(fd, bytes, flags: Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) ?? 0
    }

    /// One `send` (retried on EINTR): the count sent, or nil when a non-blocking send would block.
    private static func sendOnce(_ fd: Int32, _ bytes: ArraySlice<UInt8>, flags: Int32) throws(HostCallError) -> Int? {
        while true {
            // SAFETY: send reads at most `bytes.count` bytes from the slice's contiguous storage during the call.
            let sent = unsafe bytes.withUnsafeBytes { unsafe send(fd, $0.baseAddress, $0.count, flags) }
            if sent >= 0 { return sent }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { return nil }
            throw HostCallError(operation: "send on", subject: "a socket", errorNumber: errno)
        }
    }

    /// Accepts one connection; nil when the listener was shut down or failed.
    public static func accept(_ listener: Int32) -> Int32? {
        while true {
            let fd = Glibc.accept(listener, nil, nil)
            if fd >= 0 {
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                return fd
            }
            if errno == EINTR || errno == ECONNABORTED { continue }
            return nil
        }
    }

    /// Connects to `address` at `port`.
    public static func connect(to address: IPAddress, port: UInt16) throws(HostCallError) -> Int32 {
        let family = address.isIPv4 ? AF_INET : AF_INET6
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HostCallError(operation: "create a socket for", subject: "\(address)", errorNumber: errno) }
        var result: Int32
        if address.isIPv4 {
            var target = sockaddr_in()
            target.sin_family = sa_family_t(AF_INET)
            target.sin_port = port.bigEndian
            // SAFETY: copies the 4 address bytes into the local sockaddr_in's 4-byte field.
            unsafe withUnsafeMutableBytes(of: &target.sin_addr) { raw in unsafe raw.copyBytes(from: address.bytes) }
            result = connect(fd, to: &target)
        } else {
            var target = sockaddr_in6()
            target.sin6_family = sa_family_t(AF_INET6)
            target.sin6_port = port.bigEndian
            // SAFETY: copies the 16 address bytes into the local sockaddr_in6's 16-byte field.
            unsafe withUnsafeMutableBytes(of: &target.sin6_addr) { raw in unsafe raw.copyBytes(from: address.bytes) }
            result = connect(fd, to: &target)
        }
        guard result == 0 else {
            let number = errno
            close(fd)
            throw HostCallError(operation: "connect to", subject: "\(address) port \(port)", errorNumber: number)
        }
        return fd
    }

    /// `connect` to the socket address in `target` (a sockaddr_in, sockaddr_in6 or sockaddr_un).
    private static func connect<Address>(_ fd: Int32, to target: inout Address) -> Int32 {
        // SAFETY: connect reads one `Address`, a sockaddr of the family it names, from the local.
        unsafe withUnsafePointer(to: &target) { pointer in
            unsafe pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { unsafe Glibc.connect(fd, $0, socklen_t(MemoryLayout<Address>.size)) }
        }
    }

    /// Connects to a Unix stream socket.
    public static func connectUnix(_ path: String) throws(HostCallError) -> Int32 {
        var (fd, address) = try unixSocket(path, operation: "connect to")
        let result = connect(fd, to: &address)
        guard result == 0 else {
            let number = errno
            close(fd)
            throw HostCallError(operation: "connect to", subject: path, errorNumber: number)
        }
        return fd
    }

    /// The addresses a host name resolves to on this host (IPv4 and IPv6), in resolver order.
    public static func resolve(_ name: String) -> [IPAddress] {
        // SAFETY: a zeroed C struct whose pointer fields stay nil.
        var hints = unsafe addrinfo()
        unsafe hints.ai_family = AF_UNSPEC
        unsafe hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        // SAFETY: getaddrinfo allocates the list, which is walked here and freed once.
        guard unsafe getaddrinfo(name, nil, &hints, &list) == 0 else { return [] }
        // SAFETY: as above.
        defer { unsafe freeaddrinfo(list) }
        var addresses: [IPAddress] = []
        var entry = unsafe list
        // SAFETY: each entry and its ai_addr are valid until freeaddrinfo; the family says which sockaddr it is.
        while let current = unsafe entry {
            if unsafe current.pointee.ai_family == AF_INET, let raw = unsafe current.pointee.ai_addr {
                let bytes = unsafe raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { unsafe withUnsafeBytes(of: unsafe $0.pointee.sin_addr) { unsafe Array($0) } }
                if let address = IPAddress(bytes: bytes), !addresses.contains(address) { addresses.append(address) }
            } else if unsafe current.pointee.ai_family == AF_INET6, let raw = unsafe current.pointee.ai_addr {
                let bytes = unsafe raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { unsafe withUnsafeBytes(of: unsafe $0.pointee.sin6_addr) { unsafe Array($0) } }
                if let address = IPAddress(bytes: bytes), !addresses.contains(address) { addresses.append(address) }
            }
            unsafe entry = unsafe current.pointee.ai_next
        }
        return addresses
    }

    /// Ends both directions of a connection (wakes a thread blocked on it).
    public static func shutdownBoth(_ fd: Int32) { _ = shutdown(fd, Int32(SHUT_RDWR)) }

    /// Ends our receiving direction (a thread blocked receiving sees the end of the stream).
    public static func shutdownRead(_ fd: Int32) { _ = shutdown(fd, Int32(SHUT_RD)) }

    /// Ends our sending direction (the peer reads end of file).
    public static func shutdownWrite(_ fd: Int32) { _ = shutdown(fd, Int32(SHUT_WR)) }
}
