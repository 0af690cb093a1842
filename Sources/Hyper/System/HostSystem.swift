#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#else
#error("Unsupported platform")
#endif

/// The kind of a file-system object, as far as sandbox setup cares.
public enum FileKind: Sendable, Equatable {
    case directory
    case regularFile
    case other
}

/// A failed host call: the operation, the path or object, and the errno text.
public struct HostCallError: Error, Equatable, Sendable, CustomStringConvertible {
    public var operation: String
    public var subject: String
    public var errorNumber: Int32

    public var description: String { "\(operation) \(subject): \(HostSystem.errorText(errorNumber))" }
}

/// The host calls the core needs: files, the environment, clocks and writes to descriptors.
///
/// This is the one file in `Hyper`'s launch path that calls libc with pointers. Each call checks its result
/// and retries on `EINTR` where the call can be interrupted.
public enum HostSystem {
    /// Returns the text for an errno value.
    public static func errorText(_ number: Int32) -> String {
        // SAFETY: strerror returns a pointer to a static, NUL-terminated string that we copy at once.
        guard let text = unsafe strerror(number) else { return "error \(number)" }
        return unsafe String(cString: text)
    }

    /// Returns the current errno value.
    public static var lastError: Int32 { errno }

    /// Returns the kind of the object at `path`, following symbolic links, or nil when it does not exist.
    public static func fileKind(at path: String) -> FileKind? {
        var info = stat()
        // SAFETY: stat writes only into `info`, a local of the right type.
        guard unsafe stat(path, &info) == 0 else { return nil }
        switch info.st_mode & S_IFMT {
        case S_IFDIR: return .directory
        case S_IFREG: return .regularFile
        default: return .other
        }
    }

    /// Returns whether the calling process may read the object at `path`.
    public static func isReadable(_ path: String) -> Bool {
        // SAFETY: access only reads the NUL-terminated path that Swift passes for the call.
        unsafe access(path, R_OK) == 0
    }

    /// Returns the canonical absolute path of `path`, with symbolic links resolved.
    public static func realPath(_ path: String) throws(HostCallError) -> String {
        // SAFETY: realpath with a nil buffer allocates the result, which we copy and free.
        guard let resolved = unsafe realpath(path, nil) else {
            throw HostCallError(operation: "resolve", subject: path, errorNumber: errno)
        }
        defer { unsafe free(resolved) }
        return unsafe String(cString: resolved)
    }

    /// Returns the current working directory.
    public static func currentDirectory() throws(HostCallError) -> String {
        // SAFETY: getcwd with a nil buffer allocates the result, which we copy and free.
        guard let cwd = unsafe getcwd(nil, 0) else {
            throw HostCallError(operation: "get", subject: "the current directory", errorNumber: errno)
        }
        defer { unsafe free(cwd) }
        return unsafe String(cString: cwd)
    }

    /// Returns the value of a host environment variable, or nil when it is not set.
    public static func environmentValue(_ name: String) -> String? {
        // SAFETY: getenv returns a pointer into the environment block, copied at once.
        guard let value = unsafe getenv(name) else { return nil }
        return unsafe String(cString: value)
    }

    /// Reads a whole file, refusing files larger than `limit` bytes.
    public static func readFile(_ path: String, limit: Int = 16 << 20) throws(HostCallError) -> [UInt8] {
        // SAFETY: open only reads the NUL-terminated path that Swift passes for the call.
        let fd = unsafe open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw HostCallError(operation: "open", subject: path, errorNumber: errno) }
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            // SAFETY: the buffer pointer is valid for chunk.count bytes for the duration of the call.
            let count = unsafe chunk.withUnsafeMutableBytes { unsafe read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw HostCallError(operation: "read", subject: path, errorNumber: errno)
            }
            if count == 0 { return result }
            guard result.count + count <= limit else {
                throw HostCallError(operation: "read", subject: path, errorNumber: EFBIG)
            }
            result.append(contentsOf: chunk[0..<count])
        }
    }

    /// Reads a small text file such as one under /proc; nil when it cannot be read.
    public static func readText(_ path: String) -> String? {
        guard let bytes = try? readFile(path, limit: 4 << 20) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Writes a whole file, replacing it atomically through a temporary file in the same directory.
    public static func writeFile(_ path: String, _ bytes: [UInt8]) throws(HostCallError) {
        let temporary = path + ".tmp-\(getpid())"
        // SAFETY: open only reads the NUL-terminated path that Swift passes for the call.
        let fd = unsafe open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw HostCallError(operation: "create", subject: temporary, errorNumber: errno) }
        do {
            try writeAll(fd, bytes)
        } catch {
            close(fd)
            removeQuietly(temporary)
            throw HostCallError(operation: "write", subject: path, errorNumber: error.errorNumber)
        }
        guard close(fd) == 0 else {
            let number = errno
            removeQuietly(temporary)
            throw HostCallError(operation: "write", subject: path, errorNumber: number)
        }
        // SAFETY: rename only reads the two NUL-terminated paths during the call.
        guard unsafe rename(temporary, path) == 0 else {
            let number = errno
            removeQuietly(temporary)
            throw HostCallError(operation: "rename to", subject: path, errorNumber: number)
        }
    }

    /// Writes all bytes to a descriptor, retrying short writes and `EINTR`.
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws(HostCallError) {
        var offset = 0
        while offset < bytes.count {
            // SAFETY: the pointer covers bytes[offset...] and is only used during the call.
            let written = unsafe bytes.withUnsafeBytes { unsafe write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0 {
                if errno == EINTR { continue }
                throw HostCallError(operation: "write", subject: "descriptor \(fd)", errorNumber: errno)
            }
            offset += written
        }
    }

    /// Reads up to `count` bytes from a descriptor; an empty result means end of file.
    public static func readSome(_ fd: Int32, count: Int = 65536) throws(HostCallError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        while true {
            // SAFETY: the buffer pointer is valid for buffer.count bytes during the call.
            let got = unsafe buffer.withUnsafeMutableBytes { unsafe read(fd, $0.baseAddress, $0.count) }
            if got < 0 {
                if errno == EINTR { continue }
                throw HostCallError(operation: "read", subject: "descriptor \(fd)", errorNumber: errno)
            }
            return Array(buffer[0..<got])
        }
    }

    /// Returns the monotonic clock in nanoseconds.
    public static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        // SAFETY: clock_gettime writes only into `now`, a local timespec.
        unsafe clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    /// Returns the wall clock (CLOCK_REALTIME) in nanoseconds since the epoch.
    public static func realtimeNanoseconds() -> Int64 {
        var now = timespec()
        // SAFETY: clock_gettime writes only into `now`, a local timespec.
        unsafe clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }

    /// Returns the kernel's name and release, as `uname -sr` prints them.
    public static func kernelRelease() -> String {
        var names = utsname()
        // SAFETY: uname writes only into `names`, a local utsname.
        guard unsafe uname(&names) == 0 else { return "unknown" }
        // SAFETY: utsname fields are NUL-terminated C arrays inside `names`, read while it is alive.
        let release = unsafe withUnsafeBytes(of: &names.release) { unsafe String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        return release
    }
}

extension HostSystem {
    /// Removes a file, ignoring failure (for cleaning up temporaries).
    public static func removeQuietly(_ path: String) {
        // SAFETY: unlink only reads the NUL-terminated path during the call.
        _ = unsafe unlink(path)
    }

    /// Whether the process runs with effective uid 0.
    public static var isRoot: Bool { geteuid() == 0 }
}

extension HostSystem {
    /// Returns the target of the symbolic link at `path`, or nil when it is not a symbolic link.
    public static func symbolicLinkTarget(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        // SAFETY: readlink writes at most buffer.count - 1 bytes into the buffer, which outlives the call.
        let length = unsafe buffer.withUnsafeMutableBufferPointer { pointer -> Int in
            guard let base = pointer.baseAddress else { return -1 }
            return unsafe readlink(path, base, pointer.count - 1)
        }
        guard length > 0 else { return nil }
        return String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Returns the owner and group of the object at `path`, or nil when it does not exist.
    public static func owner(of path: String) -> (uid: UInt32, gid: UInt32)? {
        var info = stat()
        // SAFETY: stat writes only into `info`, a local of the right type.
        guard unsafe stat(path, &info) == 0 else { return nil }
        return (info.st_uid, info.st_gid)
    }

    /// The real user and group ids of this process.
    public static var userIdentity: (uid: UInt32, gid: UInt32) { (getuid(), getgid()) }

    /// The path of the running executable.
    public static func executablePath() -> String? { symbolicLinkTarget("/proc/self/exe") }

    /// The process id of this process.
    public static var processID: Int32 { getpid() }
}

/// A terminal's settings, saved so that raw mode can be undone.
public struct TerminalSettings: Sendable {
    let descriptor: Int32
    let saved: termios

    /// Puts the terminal on `descriptor` into raw mode and returns its previous settings, or nil when the
    /// descriptor is not a terminal.
    public static func makeRaw(_ descriptor: Int32) -> TerminalSettings? {
        guard isatty(descriptor) == 1 else { return nil }
        var original = termios()
        // SAFETY: tcgetattr writes only into `original`, a local termios.
        guard unsafe tcgetattr(descriptor, &original) == 0 else { return nil }
        var raw = original
        // SAFETY: cfmakeraw edits only `raw`, a local termios.
        unsafe cfmakeraw(&raw)
        // SAFETY: tcsetattr only reads `raw` during the call.
        guard unsafe tcsetattr(descriptor, TCSANOW, &raw) == 0 else { return nil }
        return TerminalSettings(descriptor: descriptor, saved: original)
    }

    /// Restores the saved settings.
    public func restore() {
        var settings = saved
        // SAFETY: tcsetattr only reads `settings` during the call.
        _ = unsafe tcsetattr(descriptor, TCSANOW, &settings)
    }
}

extension HostSystem {
    /// Ignores terminal interrupts (^C, ^\) in this process, so that they reach the sandboxed command alone.
    public static func ignoreInterrupts() {
        _ = signal(SIGINT, SIG_IGN)
        _ = signal(SIGQUIT, SIG_IGN)
    }
}
