import CHyperAgent
import Glibc

/// The agent's system calls that take pointers: the one file of the agent with unsafe code.
enum GuestSystem {
    /// Guest uptime in nanoseconds (CLOCK_BOOTTIME, which starts with the kernel).
    static func uptimeNanoseconds() -> UInt64 {
        var now = timespec()
        // SAFETY: clock_gettime writes only into `now`, a local timespec.
        unsafe clock_gettime(CLOCK_BOOTTIME, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    /// Mounts a file system; returns 0 or -1 with errno.
    static func mount(_ source: String, on target: String, type: String, flags: UInt, options: String?) -> Int32 {
        // SAFETY: mount reads the NUL-terminated strings Swift passes, only during the call.
        guard let options else { return unsafe Glibc.mount(source, target, type, flags, nil) }
        return unsafe options.withCString { unsafe Glibc.mount(source, target, type, flags, $0) }
    }

    /// Loads a kernel module file; false with errno on failure.
    static func loadModule(_ path: String) -> Bool {
        // SAFETY: the shim reads the NUL-terminated path during the call.
        unsafe chyper_agent_load_module(path) == 0
    }

    static func makeDirectory(_ path: String, mode: mode_t = 0o755) -> Bool {
        // SAFETY: mkdir reads the NUL-terminated path during the call.
        unsafe mkdir(path, mode) == 0 || errno == EEXIST
    }

    static func makeLink(_ target: String, at path: String) {
        // SAFETY: symlink reads two NUL-terminated strings during the call.
        _ = unsafe symlink(target, path)
    }

    static func open(_ path: String, _ flags: Int32) -> Int32 {
        // SAFETY: open reads the NUL-terminated path during the call.
        unsafe Glibc.open(path, flags)
    }

    /// Reads what is available (up to `count` bytes): the bytes, or nil with errno set (EAGAIN, EINTR...);
    /// an empty array at end of file.
    static func read(_ fd: Int32, count: Int) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: count)
        // SAFETY: read writes at most `count` bytes into the buffer, which holds exactly that many.
        let got = unsafe buffer.withUnsafeMutableBytes { unsafe Glibc.read(fd, $0.baseAddress, count) }
        guard got >= 0 else { return nil }
        return Array(buffer[0..<got])
    }

    /// Writes some of `bytes` from `offset`; returns how many, or -1 with errno.
    static func write(_ fd: Int32, _ bytes: [UInt8], from offset: Int = 0) -> Int {
        guard offset < bytes.count else { return 0 }
        // SAFETY: write reads `bytes.count - offset` bytes from inside the array during the call.
        return unsafe bytes.withUnsafeBytes { unsafe Glibc.write(fd, $0.baseAddress! + offset, bytes.count - offset) }
    }

    /// Sends some of `bytes` from `offset` on a socket, never raising SIGPIPE; returns how many, or -1 with errno.
    static func send(_ fd: Int32, _ bytes: [UInt8], from offset: Int) -> Int {
        guard offset < bytes.count else { return 0 }
        // SAFETY: send reads `bytes.count - offset` bytes from inside the array during the call.
        return unsafe bytes.withUnsafeBytes { unsafe Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
    }

    /// Writes all of `bytes`, retrying short writes; false when the descriptor fails.
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let wrote = write(fd, bytes, from: offset)
            if wrote < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            guard wrote > 0 else { return false }
            offset += wrote
        }
        return true
    }

    /// A whole small file as text, or nil.
    static func readText(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        while let chunk = read(fd, count: 4096), !chunk.isEmpty { bytes += chunk }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Creates a file that must not exist yet, with `mode`, holding `text`.
    static func createFile(_ path: String, _ text: String, mode: mode_t) -> Bool {
        // SAFETY: open reads the NUL-terminated path during the call.
        let fd = unsafe Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return writeAll(fd, Array(text.utf8))
    }

    /// Writes text to an existing file (a cgroup or proc knob).
    static func writeText(_ path: String, _ text: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return write(fd, Array(text.utf8)) == text.utf8.count
    }

    /// Waits for events on `descriptors` (fd, events), at most `milliseconds` (-1: no limit); returns the
    /// events seen per descriptor.
    static func poll(_ descriptors: [(Int32, Int16)], milliseconds: Int32 = -1) -> [Int16] {
        var entries = descriptors.map { pollfd(fd: $0.0, events: $0.1, revents: 0) }
        // SAFETY: poll reads and writes exactly `entries.count` pollfd values in the array.
        guard unsafe Glibc.poll(&entries, nfds_t(entries.count), milliseconds) > 0 else { return descriptors.map { _ in 0 } }
        return entries.map(\.revents)
    }

    /// A pipe whose ends close on exec: (read, write).
    static func pipe() -> (read: Int32, write: Int32)? {
        var ends: [Int32] = [-1, -1]
        // SAFETY: the shim writes exactly two descriptors into the two-element array.
        guard unsafe chyper_agent_pipe(&ends) == 0 else { return nil }
        return (ends[0], ends[1])
    }

    /// A new pseudo-terminal of this size: the controller and the replica's path.
    static func openTerminal(rows: UInt16, columns: UInt16) -> (controller: Int32, path: String)? {
        var name = [CChar](repeating: 0, count: 128)
        // SAFETY: the shim writes at most `name.count` bytes, NUL-terminated, into the array.
        let controller = unsafe chyper_agent_open_terminal(&name, name.count, rows, columns)
        guard controller >= 0 else { return nil }
        return (controller, String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    /// Starts a command (see `chyper_agent_spawn`); returns its pid, or -1 with errno.
    static func spawn(arguments: [String], environment: [String], directory: String, streams: [Int32], terminal: String?, cgroupProcs: String?) -> pid_t {
        var execError: Int32 = 0
        // SAFETY: the argument and environment arrays are NULL-terminated copies that live for the call; the
        // other strings are passed as NUL-terminated copies for the call.
        return unsafe withCStrings(arguments) { argv in
            unsafe withCStrings(environment) { envp in
                unsafe chyper_agent_spawn(argv, envp, directory, streams[0], streams[1], streams[2], terminal, cgroupProcs, &execError)
            }
        }
    }

    /// Calls `body` with a NULL-terminated C array of copies of the strings, valid for the call.
    private static func withCStrings<Result>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> Result) -> Result {
        // SAFETY: strdup copies each string; the copies are freed after `body` returns.
        let copies = unsafe strings.map { unsafe strdup($0) } + [nil]
        defer { unsafe copies.forEach { unsafe free($0) } }
        return unsafe copies.withUnsafeBufferPointer { unsafe body($0.baseAddress!) }
    }

    /// Sets the hostname, mixes `seed` into the kernel's entropy pool and reseeds its generator from it;
    /// false with errno.
    static func setIdentity(hostname: String, seed: [UInt8]) -> Bool {
        // SAFETY: the shim reads the NUL-terminated hostname and `seed.count` bytes of the array during the call.
        unsafe seed.withUnsafeBytes { unsafe chyper_agent_set_identity(hostname, $0.baseAddress, $0.count) == 0 }
    }

    /// Sets the wall clock (CLOCK_REALTIME); false with errno.
    static func setRealtime(_ nanoseconds: Int64) -> Bool {
        var time = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        // SAFETY: clock_settime reads the local timespec during the call.
        return unsafe clock_settime(CLOCK_REALTIME, &time) == 0
    }

    /// Waits for one child to end; its wait status, or nil with errno.
    static func waitForChild(_ pid: pid_t) -> Int32? {
        var status: Int32 = 0
        while true {
            // SAFETY: waitpid writes the status into a local.
            if unsafe waitpid(pid, &status, 0) == pid { return status }
            if errno != EINTR { return nil }
        }
    }

    /// Reads `count` bytes at `offset` of a file or device; nil when it cannot.
    static func read(path: String, offset: Int, count: Int) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: count)
        // SAFETY: pread writes at most `count` bytes into the buffer, which holds exactly that many.
        let got = unsafe buffer.withUnsafeMutableBytes { unsafe pread(fd, $0.baseAddress, count, off_t(offset)) }
        return got == count ? buffer : nil
    }

    /// Makes `path` a mount of the root kind for PID 1 (see `chyper_agent_switch_root`); false with errno.
    static func switchRoot(to path: String) -> Bool {
        // SAFETY: the shim reads the NUL-terminated path during the call.
        unsafe chyper_agent_switch_root(path) == 0
    }

    /// A non-blocking connection to a Unix socket, or -1 with errno.
    static func connectUnix(_ path: String) -> Int32 {
        // SAFETY: the shim reads the NUL-terminated path during the call.
        unsafe chyper_agent_unix_connect(path)
    }

    /// Opens a file for appending, creating it (for a daemon's log); -1 with errno.
    static func openLog(_ path: String) -> Int32 {
        // SAFETY: open reads the NUL-terminated path during the call.
        unsafe Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
    }

    /// Waits for any child without blocking: its pid and wait status, or nil.
    static func reapChild() -> (pid: pid_t, status: Int32)? {
        var status: Int32 = 0
        // SAFETY: waitpid writes the status into a local.
        let pid = unsafe waitpid(-1, &status, WNOHANG)
        return pid > 0 ? (pid, status) : nil
    }
}
