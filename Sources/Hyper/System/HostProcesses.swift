import CHyperHost
import HyperAgentProtocol
#if canImport(Glibc)
import Glibc
#endif

/// Other processes of the host: starting a detached one, and telling whether one still lives.
extension HostSystem {
    /// glibc's POSIX_SPAWN_SETSID, which Swift does not import (it needs _GNU_SOURCE).
    static let spawnNewSession: Int16 = 0x80

    /// Starts `arguments` (a path, then its arguments) in a new session, with descriptors 0, 1, 2, ... of
    /// the child taken from `descriptors`, and this process's environment. Returns its pid; it is not waited for.
    public static func spawnDetached(_ arguments: [String], descriptors: [Int32]) throws(HostCallError) -> Int32 {
        guard let program = arguments.first else { throw HostCallError(operation: "run", subject: "an empty command", errorNumber: EINVAL) }
        // SAFETY: zeroed C structs, initialized by the init calls below before any use and destroyed after the spawn.
        var actions = unsafe posix_spawn_file_actions_t()
        var attributes = unsafe posix_spawnattr_t()
        // SAFETY: as above.
        unsafe posix_spawn_file_actions_init(&actions)
        // SAFETY: as above.
        defer { unsafe posix_spawn_file_actions_destroy(&actions) }
        // SAFETY: as above.
        unsafe posix_spawnattr_init(&attributes)
        // SAFETY: as above.
        defer { unsafe posix_spawnattr_destroy(&attributes) }
        for (target, source) in descriptors.enumerated() {
            // SAFETY: the actions copy the descriptor numbers.
            unsafe posix_spawn_file_actions_adddup2(&actions, source, Int32(target))
        }
        // Nothing else is inherited: a parent's descriptors (a test harness's pipes, say) must not live on in
        // a detached process.
        // SAFETY: adds one action to the initialized actions.
        let closing = unsafe chyper_spawn_close_from(&actions, Int32(descriptors.count))
        guard closing == 0 else { throw HostCallError(operation: "prepare", subject: program, errorNumber: closing) }
        var noSignals = sigset_t()
        var allSignals = sigset_t()
        sigemptyset(&noSignals)
        sigfillset(&allSignals)
        // SAFETY: the attributes copy the signal sets.
        unsafe posix_spawnattr_setsigmask(&attributes, &noSignals)
        // SAFETY: as above.
        unsafe posix_spawnattr_setsigdefault(&attributes, &allSignals)
        // SAFETY: sets flags in the initialized attributes.
        unsafe posix_spawnattr_setflags(&attributes, Self.spawnNewSession | Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        // SAFETY: strdup copies each argument; the copies are freed after the spawn.
        let copies = unsafe arguments.map { unsafe strdup($0) } + [nil]
        // SAFETY: as above.
        defer { unsafe copies.forEach { unsafe free($0) } }
        var pid = pid_t()
        // SAFETY: argv is a NULL-terminated array of live C strings; environ is this process's environment.
        let result = unsafe copies.withUnsafeBufferPointer { argv in
            unsafe posix_spawn(&pid, program, &actions, &attributes, argv.baseAddress!, environ)
        }
        guard result == 0 else { throw HostCallError(operation: "start", subject: program, errorNumber: result) }
        return pid
    }

    /// When process `pid` started, in clock ticks since boot (`/proc/PID/stat` field 22), or nil when there is
    /// no such live process (a zombie has ended). A pid and this value together name one process even after
    /// the pid is reused.
    public static func processStartTicks(_ pid: Int32) -> UInt64? {
        guard pid > 0, let stat = readText("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after the command name (which may hold spaces) start with field 3, the state.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19, fields[0] != "Z", fields[0] != "X" else { return nil }
        return UInt64(fields[19])
    }

    /// Seconds since the epoch.
    public static func wallClockSeconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec)
    }

    /// Detaches this process from its controlling terminal into a session of its own.
    public static func startSession() { _ = setsid() }

    /// Sends `signal` to process `pid`; false when it cannot (gone, or not ours).
    @discardableResult
    public static func sendSignal(_ signal: Int32, to pid: Int32) -> Bool { kill(pid, signal) == 0 }

    /// Sleeps this thread.
    public static func sleep(milliseconds: Int) { usleep(UInt32(clamping: milliseconds * 1000)) }

    /// The names in a directory (without `.` and `..`); empty when it cannot be read.
    public static func directoryNames(_ path: String) -> [String] { (try? FileTree.entries(of: path)) ?? [] }

    /// Writes text to an existing file without truncating or replacing it (a cgroup or proc knob).
    public static func writeExisting(_ path: String, _ text: String) throws(HostCallError) {
        // SAFETY: open only reads the NUL-terminated path during the call.
        let fd = unsafe open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw HostCallError(operation: "open", subject: path, errorNumber: errno) }
        defer { close(fd) }
        try writeAll(fd, Array(text.utf8))
    }

    /// A pipe whose ends close on exec: (read, write).
    public static func makePipe() throws(HostCallError) -> (read: Int32, write: Int32) {
        var ends: [Int32] = [-1, -1]
        // SAFETY: pipe writes exactly two descriptors into the two-element array.
        guard unsafe pipe(&ends) == 0 else { throw HostCallError(operation: "create", subject: "a pipe", errorNumber: errno) }
        for fd in ends { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return (ends[0], ends[1])
    }
}
