#if os(Linux)
import CHyperJail
import Glibc
import Hyper

/// The process backend's host calls: pipes, spawning the helper, signals and reaping.
///
/// This is the only file of HyperProcess that handles raw pointers. No Swift runs between fork and exec:
/// `posix_spawn` (through `HostSystem.spawn`) or the C helper do that part.
enum ProcessSystem {
    /// Creates a close-on-exec pipe and returns (read end, write end).
    static func makePipe() throws(ProcessError) -> (read: Int32, write: Int32) {
        var ends: [Int32] = [-1, -1]
        // SAFETY: pipe writes exactly two descriptors into the two-element array.
        guard unsafe pipe(&ends) == 0 else { throw ProcessError.systemCall(operation: "pipe", errorNumber: errno) }
        // The helper closes every descriptor it was not given, so a spawn racing this line leaks nothing inward.
        for fd in ends {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        return (ends[0], ends[1])
    }

    /// Closes a descriptor, ignoring errors (used on paths that are already failing or finished).
    static func closeQuietly(_ fd: Int32) {
        if fd >= 0 { _ = close(fd) }
    }

    /// Starts the helper with an empty environment and exactly these descriptors at 0, 1, 2, ...: by forking
    /// when this process has one thread, else by spawning `path` in helper mode (argv `hyper-jail MARKER`).
    ///
    /// - Returns: the child's pid.
    static func spawn(_ path: String, descriptors: [Int32]) throws(ProcessError) -> pid_t {
        // A single-threaded caller (hyperctl itself) forks straight into the helper: no exec, no second start-up.
        // SAFETY: the array outlives the call, which reads `descriptors.count` descriptors from it.
        let forked = unsafe descriptors.withUnsafeBufferPointer { unsafe chyper_jail_fork($0.baseAddress, Int32($0.count)) }
        if forked > 0 { return forked }
        if forked < 0, errno != EBUSY { throw ProcessError.systemCall(operation: "fork the helper", errorNumber: errno) }
        // SAFETY: the marker is a static NUL-terminated C string from the helper's header.
        let marker = unsafe String(cString: chyper_jail_marker())
        do {
            return try HostSystem.spawn(path: path, arguments: ["hyper-jail", marker], environment: [],
                                        descriptors: descriptors, newSession: false)
        } catch {
            throw ProcessError.systemCall(operation: "spawn \(path)", errorNumber: error.errorNumber)
        }
    }

    /// Sends a signal to a process.
    static func send(_ signal: Int32, to pid: pid_t) -> Bool { Glibc.kill(pid, signal) == 0 }

    /// Waits for a child to end and returns its raw wait status.
    static func reap(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        // SAFETY: waitpid writes only into `status`, a local.
        while unsafe waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status
    }

    /// Makes writes to a closed pipe fail with EPIPE instead of killing the process.
    static func ignoreBrokenPipes() {
        _ = signal(SIGPIPE, SIG_IGN)
    }
}
#endif
