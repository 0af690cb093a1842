#if os(Linux)
import CHyperJail
import Glibc
import Hyper

/// The process backend's host calls: pipes, spawning the helper, signals and reaping.
///
/// This is the only file of HyperProcess that handles raw pointers. No Swift runs between fork and exec:
/// `posix_spawn` or the C helper do that part.
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
        // Move every source above the target range first, so no dup2 overwrites a later source.
        var lifted: [Int32] = []
        defer { lifted.forEach(closeQuietly) }
        for fd in descriptors {
            let copy = fcntl(fd, F_DUPFD_CLOEXEC, Int32(100))
            guard copy >= 0 else { throw ProcessError.systemCall(operation: "duplicate descriptor \(fd)", errorNumber: errno) }
            lifted.append(copy)
        }
        // SAFETY: plain C structs, zero-initialised here and handed to their init functions before any use.
        var actions = unsafe posix_spawn_file_actions_t()
        var attributes = posix_spawnattr_t()
        // SAFETY: the file-actions and attribute objects are locals, initialised here and destroyed on every path.
        unsafe posix_spawn_file_actions_init(&actions)
        defer { unsafe posix_spawn_file_actions_destroy(&actions) }
        // SAFETY: as above.
        unsafe posix_spawnattr_init(&attributes)
        defer { unsafe posix_spawnattr_destroy(&attributes) }
        for (target, source) in lifted.enumerated() {
            // SAFETY: `actions` is initialised; dup2 of a lifted descriptor onto a small target clears close-on-exec.
            unsafe posix_spawn_file_actions_adddup2(&actions, source, Int32(target))
        }
        var noSignals = sigset_t()
        var allSignals = sigset_t()
        // SAFETY: the signal sets are locals of the right type.
        unsafe sigemptyset(&noSignals)
        // SAFETY: as above.
        unsafe sigfillset(&allSignals)
        // SAFETY: `attributes` is initialised and the sets outlive the spawn call.
        unsafe posix_spawnattr_setsigmask(&attributes, &noSignals)
        // SAFETY: as above.
        unsafe posix_spawnattr_setsigdefault(&attributes, &allSignals)
        // SAFETY: as above; the flags are plain integers.
        unsafe posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var pid: pid_t = 0
        // SAFETY: strdup copies NUL-terminated strings into malloc'd C strings, freed below.
        let name = unsafe strdup("hyper-jail")
        // SAFETY: as above; the marker is a static C string from the helper's header.
        let marker = unsafe strdup(chyper_jail_marker())
        defer {
            unsafe free(name)
            unsafe free(marker)
        }
        var argv: [UnsafeMutablePointer<CChar>?] = unsafe [name, marker, nil]
        var environment: [UnsafeMutablePointer<CChar>?] = unsafe [nil]
        // SAFETY: argv and environment are NUL-terminated arrays of C strings that outlive the call;
        // posix_spawn copies what it needs before returning.
        let result = unsafe posix_spawn(&pid, path, &actions, &attributes, &argv, &environment)
        guard result == 0 else { throw ProcessError.systemCall(operation: "spawn \(path)", errorNumber: result) }
        return pid
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
