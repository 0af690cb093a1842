import CHyperHost
import HyperAgentProtocol
#if canImport(Glibc)
import Glibc
#endif

/// Other processes of the host: starting a detached one, and telling whether one still lives.
extension HostSystem {
    /// glibc's POSIX_SPAWN_SETSID, which Swift does not import (it needs _GNU_SOURCE).
    static let spawnNewSession: Int16 = 0x80

    /// Starts `path` with `arguments` (argv, its name first) and `environment` (nil: this process's), with
    /// descriptors 0, 1, 2, ... of the child taken from `descriptors` and no others, default signal handling
    /// and nothing blocked; in a session of its own when `newSession`. Returns its pid; it is not waited for.
    public static func spawn(path: String, arguments: [String], environment: [String]? = nil, descriptors: [Int32],
                             newSession: Bool) throws(HostCallError) -> Int32 {
        // Move every source above the target range first, so that no dup2 overwrites a later source.
        var lifted: [Int32] = []
        defer { lifted.forEach(closeDescriptor) }
        for fd in descriptors {
            let copy = fcntl(fd, F_DUPFD_CLOEXEC, Int32(100))
            guard copy >= 0 else { throw HostCallError(operation: "duplicate", subject: "descriptor \(fd)", errorNumber: errno) }
            lifted.append(copy)
        }
        // SAFETY: zeroed C structs, initialized by the init calls below before any use and destroyed after the spawn.
        var actions = unsafe posix_spawn_file_actions_t()
        var attributes = posix_spawnattr_t()
        // SAFETY: as above.
        unsafe posix_spawn_file_actions_init(&actions)
        // SAFETY: as above.
        defer { unsafe posix_spawn_file_actions_destroy(&actions) }
        // SAFETY: as above.
        unsafe posix_spawnattr_init(&attributes)
        // SAFETY: as above.
        defer { unsafe posix_spawnattr_destroy(&attributes) }
        for (target, source) in lifted.enumerated() {
            // SAFETY: the actions copy the descriptor numbers; dup2 onto the target clears close-on-exec.
            unsafe posix_spawn_file_actions_adddup2(&actions, source, Int32(target))
        }
        // Nothing else is inherited: a parent's descriptors (a test harness's pipes, say) must not live on.
        // SAFETY: adds one action to the initialized actions.
        let closing = unsafe chyper_spawn_close_from(&actions, Int32(descriptors.count))
        guard closing == 0 else { throw HostCallError(operation: "prepare", subject: path, errorNumber: closing) }
        var noSignals = sigset_t()
        var allSignals = sigset_t()
        // SAFETY: the signal sets are locals of the right type.
        unsafe sigemptyset(&noSignals)
        // SAFETY: as above.
        unsafe sigfillset(&allSignals)
        // SAFETY: the attributes copy the signal sets.
        unsafe posix_spawnattr_setsigmask(&attributes, &noSignals)
        // SAFETY: as above.
        unsafe posix_spawnattr_setsigdefault(&attributes, &allSignals)
        let flags = Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF) | (newSession ? Self.spawnNewSession : 0)
        // SAFETY: sets flags in the initialized attributes.
        unsafe posix_spawnattr_setflags(&attributes, flags)
        // SAFETY: strdup copies each string; the copies are freed after the spawn.
        let argv = unsafe arguments.map { unsafe strdup($0) } + [nil]
        // SAFETY: as above.
        let envp = unsafe (environment ?? []).map { unsafe strdup($0) } + [nil]
        // SAFETY: as above.
        defer { unsafe (argv + envp).forEach { unsafe free($0) } }
        var pid = pid_t()
        // SAFETY: argv and envp are NULL-terminated arrays of live C strings (or environ, this process's own);
        // posix_spawn copies what it needs before returning.
        let result = unsafe argv.withUnsafeBufferPointer { args in
            unsafe envp.withUnsafeBufferPointer { env in
                unsafe posix_spawn(&pid, path, &actions, &attributes, args.baseAddress!, environment == nil ? environ : UnsafeMutablePointer(mutating: env.baseAddress!))
            }
        }
        guard result == 0 else { throw HostCallError(operation: "start", subject: path, errorNumber: result) }
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
        // SAFETY: clock_gettime writes one timespec into the local.
        unsafe clock_gettime(CLOCK_REALTIME, &now)
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

    /// Removes an empty directory; the error number on failure (EBUSY for a cgroup still in use).
    public static func removeDirectory(_ path: String) -> Int32? {
        // SAFETY: rmdir reads the NUL-terminated path during the call.
        unsafe rmdir(path) == 0 ? nil : errno
    }

    /// Sets a file's size (growing it with a hole).
    public static func setFileSize(_ fd: Int32, _ size: UInt64) throws(HostCallError) {
        guard ftruncate(fd, off_t(size)) == 0 else { throw HostCallError(operation: "size", subject: "descriptor \(fd)", errorNumber: errno) }
    }

    /// The host CPU's model, as a snapshot records it: vendor, family, model and stepping from /proc/cpuinfo
    /// (read once per process: the kernel takes a while to produce that file).
    public static func cpuIdentity() -> String { hostCPUIdentity }

    private static let hostCPUIdentity: String = {
        let text = readText("/proc/cpuinfo") ?? ""
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.isEmpty { break }  // The first processor's block is enough.
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            fields[parts[0].trimmingSpaces()] = parts[1].trimmingSpaces()
        }
        return ["vendor_id", "cpu family", "model", "stepping"].map { fields[$0] ?? "?" }.joined(separator: " ")
    }()
}

