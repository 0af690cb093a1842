import Synchronization
import HyperAgentProtocol
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A host thread running one closure; `join` waits for it.
///
/// The microVM runs each vCPU and the host side of the guest session on threads of their own.
public final class HostThread: @unchecked Sendable {
    private final class Body {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    private let handle: pthread_t
    private var joined = false

    private init(handle: pthread_t) { self.handle = handle }

    /// Starts `body` on a new thread.
    public static func start(_ body: @escaping @Sendable () -> Void) throws(HyperError) -> HostThread {
        let context = unsafe Unmanaged.passRetained(Body(body)).toOpaque()
        var thread = pthread_t()
        // SAFETY: the context pointer is a retained Body that the thread takes over exactly once.
        let result = unsafe pthread_create(&thread, nil, { raw in
            guard let raw = unsafe raw else { return nil }
            unsafe Unmanaged<Body>.fromOpaque(raw).takeRetainedValue().run()
            return nil
        }, context)
        guard result == 0 else {
            // SAFETY: the thread was not created, so the retained context is still ours to release.
            unsafe Unmanaged<Body>.fromOpaque(context).release()
            throw HyperError(.hostFailure, "cannot start a thread: \(HostSystem.errorText(result))")
        }
        return HostThread(handle: thread)
    }

    /// Waits for the thread to finish. Call it from one thread, once.
    public func join() {
        guard !joined else { return }
        joined = true
        // SAFETY: the handle is a joinable thread created above and joined only once.
        _ = pthread_join(handle, nil)
    }
}


/// Threads started over time whose ends are awaited together (a server's connection threads).
public final class HostThreadGroup: Sendable {
    private let threads = Locked<[HostThread]>([])

    /// An empty group.
    public init() {}

    /// Adds a started thread.
    public func add(_ thread: HostThread) { threads.withLock { $0.append(thread) } }

    /// Joins every thread of the group, those added while it waits included.
    public func joinAll() {
        while true {
            let pending = threads.withLock { list in
                defer { list = [] }
                return list
            }
            if pending.isEmpty { return }
            for thread in pending { thread.join() }
        }
    }
}

/// A wake-up flag another thread can raise and a `poll` loop can wait on (a non-blocking self-pipe).
public final class HostEvent: Sendable {
    /// The descriptor to poll for reading.
    public let descriptor: Int32
    private let writeEnd: Int32

    /// Creates the event.
    public init() throws(HyperError) {
        var ends: [Int32] = [-1, -1]
        // SAFETY: pipe writes exactly two descriptors into the two-element array.
        guard unsafe pipe(&ends) == 0 else { throw HyperError(.hostFailure, "cannot create a pipe: \(HostSystem.errorText(errno))") }
        for fd in ends {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, O_NONBLOCK)
        }
        descriptor = ends[0]
        writeEnd = ends[1]
    }

    deinit {
        close(descriptor)
        close(writeEnd)
    }

    /// Raises the flag; safe from any thread. (A full pipe means it is raised already.)
    public func signal() {
        var one: UInt8 = 1
        // SAFETY: writes one byte from a local.
        _ = unsafe write(writeEnd, &one, 1)
    }

    /// Lowers the flag.
    public func clear() {
        var buffer = [UInt8](repeating: 0, count: 256)
        // SAFETY: reads at most 256 bytes into the array.
        while unsafe buffer.withUnsafeMutableBytes({ unsafe read(descriptor, $0.baseAddress, 256) }) > 0 {}
    }
}

extension HostSystem {
    /// Waits until one of `descriptors` is ready for reading (or hung up), or `milliseconds` pass (-1: no
    /// limit). Returns, per descriptor, whether it is ready.
    public static func waitReadable(_ descriptors: [Int32], milliseconds: Int32) -> [Bool] {
        var entries = descriptors.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        // SAFETY: poll reads and writes exactly `entries.count` pollfd values in the array.
        let result = unsafe poll(&entries, nfds_t(entries.count), milliseconds)
        guard result > 0 else { return descriptors.map { _ in false } }
        return entries.map { $0.revents != 0 }
    }

    /// Waits for `events` (POLLIN, POLLOUT) on each descriptor, or `milliseconds` (-1: no limit); returns the
    /// events seen per descriptor (hang-ups and errors included).
    public static func waitEvents(_ descriptors: [(descriptor: Int32, events: Int16)], milliseconds: Int32) -> [Int16] {
        var entries = descriptors.map { pollfd(fd: $0.descriptor, events: $0.events, revents: 0) }
        // SAFETY: poll reads and writes exactly `entries.count` pollfd values in the array.
        let result = unsafe poll(&entries, nfds_t(entries.count), milliseconds)
        guard result > 0 else { return descriptors.map { _ in 0 } }
        return entries.map(\.revents)
    }

    /// Reads up to `count` bytes at `offset` of a file; fewer at its end.
    public static func readAt(_ fd: Int32, count: Int, offset: UInt64) throws(HostCallError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            // SAFETY: pread writes at most `count - done` bytes inside the array.
            let got = unsafe bytes.withUnsafeMutableBytes { unsafe pread(fd, $0.baseAddress! + done, count - done, off_t(offset) + off_t(done)) }
            if got < 0 && errno == EINTR { continue }
            guard got >= 0 else { throw HostCallError(operation: "read", subject: "descriptor \(fd)", errorNumber: errno) }
            if got == 0 { break }
            done += got
        }
        return Array(bytes[0..<done])
    }

    /// Writes all of `bytes` at `offset` of a file.
    public static func writeAt(_ fd: Int32, _ bytes: [UInt8], offset: UInt64) throws(HostCallError) {
        var done = 0
        while done < bytes.count {
            // SAFETY: pwrite reads `bytes.count - done` bytes from inside the array.
            let wrote = unsafe bytes.withUnsafeBytes { unsafe pwrite(fd, $0.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done)) }
            if wrote < 0 && errno == EINTR { continue }
            guard wrote > 0 else { throw HostCallError(operation: "write", subject: "descriptor \(fd)", errorNumber: errno) }
            done += wrote
        }
    }

    /// Opens a file for reading, or reading and writing; returns the descriptor and the file's size.
    public static func openFile(_ path: String, writable: Bool) throws(HostCallError) -> (descriptor: Int32, size: UInt64) {
        // SAFETY: open reads the NUL-terminated path for the call.
        let fd = unsafe open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC)
        guard fd >= 0 else { throw HostCallError(operation: "open", subject: path, errorNumber: errno) }
        var info = stat()
        // SAFETY: fstat writes only into `info`, a local of the right type.
        guard unsafe fstat(fd, &info) == 0 else {
            let number = errno
            close(fd)
            throw HostCallError(operation: "stat", subject: path, errorNumber: number)
        }
        guard info.st_mode & S_IFMT == S_IFBLK else { return (fd, UInt64(info.st_size)) }
        // A block device's size is where its end is.
        let end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else {
            let number = errno
            close(fd)
            throw HostCallError(operation: "find the size of", subject: path, errorNumber: number)
        }
        return (fd, UInt64(end))
    }

    /// A new, empty file of `size` bytes (sparse: it takes no space until written) in `directory` that has
    /// no name, so that it is gone once its last descriptor closes, however the process ends.
    public static func createAnonymousFile(in directory: String, size: UInt64) throws(HostCallError) -> Int32 {
        // SAFETY: open reads the NUL-terminated path for the call.
        // O_TMPFILE (__O_TMPFILE | O_DIRECTORY), which the Glibc module does not export.
        let anonymous: Int32 = 0o20_200_000
        var fd = unsafe open(directory, anonymous | O_RDWR | O_CLOEXEC, 0o600)
        if fd < 0, errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL {
            // A file system without O_TMPFILE: a named file, unlinked at once.
            let path = directory + "/.scratch-" + ((try? HostRandom().hex(bytes: 8)) ?? String(getpid()))
            // SAFETY: open and unlink read the NUL-terminated path for the call.
            fd = unsafe open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0o600)
            if fd >= 0 { unsafe unlink(path) }
        }
        guard fd >= 0 else { throw HostCallError(operation: "create a scratch file in", subject: directory, errorNumber: errno) }
        guard ftruncate(fd, off_t(size)) == 0 else {
            let number = errno
            close(fd)
            throw HostCallError(operation: "size a scratch file in", subject: directory, errorNumber: number)
        }
        return fd
    }

    /// Copies the data of `source`'s first `size` bytes to the same offsets of `destination`, skipping holes
    /// (SEEK_DATA/SEEK_HOLE), so that a sparse file's copy is as sparse.
    public static func copyData(from source: Int32, to destination: Int32, size: UInt64) throws(HostCallError) {
        // SEEK_DATA and SEEK_HOLE (Linux), which the Glibc module does not export.
        let seekData: Int32 = 3, seekHole: Int32 = 4
        var offset: UInt64 = 0
        while offset < size {
            let data = lseek(source, off_t(offset), seekData)
            if data < 0 && errno == ENXIO { return }  // Only a hole is left.
            guard data >= 0 else { throw HostCallError(operation: "find data in", subject: "descriptor \(source)", errorNumber: errno) }
            let holeAt = lseek(source, data, seekHole)
            guard holeAt >= 0 else { throw HostCallError(operation: "find a hole in", subject: "descriptor \(source)", errorNumber: errno) }
            var position = UInt64(data)
            let end = min(UInt64(holeAt), size)
            while position < end {
                let chunk = try readAt(source, count: Int(min(1 << 20, end - position)), offset: position)
                guard !chunk.isEmpty else { break }
                try writeAt(destination, chunk, offset: position)
                position += UInt64(chunk.count)
            }
            offset = max(end, offset + 1)
        }
    }

    /// Flushes a file to its storage.
    public static func synchronize(_ fd: Int32) -> Bool { fdatasync(fd) == 0 }

    /// Closes a descriptor.
    public static func closeDescriptor(_ fd: Int32) { close(fd) }

    /// A close-on-exec duplicate of a descriptor, or -1.
    public static func duplicate(_ fd: Int32) -> Int32 { fcntl(fd, F_DUPFD_CLOEXEC, 3) }
}

extension HostSystem {
    /// Creates (or truncates) a file for writing and returns its descriptor.
    public static func createFile(_ path: String) throws(HostCallError) -> Int32 {
        // SAFETY: open reads the NUL-terminated path for the call.
        let fd = unsafe open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw HostCallError(operation: "create", subject: path, errorNumber: errno) }
        return fd
    }

    /// The window size of the terminal on `descriptor`, or nil when it is not a terminal.
    public static func windowSize(_ descriptor: Int32) -> (rows: UInt16, columns: UInt16)? {
        var size = winsize()
        // SAFETY: TIOCGWINSZ writes one winsize into the local.
        guard unsafe ioctl(descriptor, UInt(TIOCGWINSZ), &size) == 0 else { return nil }
        return (size.ws_row, size.ws_col)
    }
}

/// A value shared between threads behind a lock, as a reference that closures can capture.
public final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    /// Creates the box.
    public init(_ value: Value) { mutex = Mutex(value) }

    /// Runs `body` with the value, under the lock.
    public func withLock<Result: Sendable>(_ body: (inout Value) -> Result) -> Result {
        mutex.withLock { value in body(&value) }
    }

    /// The current value.
    public var value: Value { mutex.withLock { $0 } }
}

/// One finished child process, as a benchmark sees it.
public struct MeasuredRun: Equatable, Sendable {
    /// Wall time from just before the spawn to the end of the wait.
    public var nanoseconds: UInt64
    /// The exit code, or 128+N when signal N killed it.
    public var exitCode: Int32
    /// The peak resident set of the largest process in its tree (the child and every descendant it waited
    /// for), in KiB, as wait4 reports it.
    public var peakResidentKiB: Int
}

extension HostSystem {
    /// Runs `arguments` (a path, then its arguments) with stdin, stdout and stderr on /dev/null (stderr into
    /// `errorPath` when given) and this process's environment, waits for it, and measures it.
    public static func runMeasured(_ arguments: [String], errorPath: String? = nil) throws(HostCallError) -> MeasuredRun {
        guard let program = arguments.first else { throw HostCallError(operation: "run", subject: "an empty command", errorNumber: EINVAL) }
        // SAFETY: a zeroed C struct, initialized by posix_spawn_file_actions_init before any use.
        var actions = unsafe posix_spawn_file_actions_t()
        // SAFETY: the file actions are initialized here, used for one spawn and destroyed below.
        unsafe posix_spawn_file_actions_init(&actions)
        // SAFETY: as above.
        defer { unsafe posix_spawn_file_actions_destroy(&actions) }
        for (fd, path, flags) in [(Int32(0), "/dev/null", O_RDONLY), (1, "/dev/null", O_WRONLY),
                                  (2, errorPath ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC)] {
            // SAFETY: addopen copies the NUL-terminated path into the actions.
            unsafe posix_spawn_file_actions_addopen(&actions, fd, path, flags, 0o600)
        }
        // SAFETY: strdup copies each argument; the copies are freed after the spawn.
        let copies = unsafe arguments.map { unsafe strdup($0) } + [nil]
        // SAFETY: as above.
        defer { unsafe copies.forEach { unsafe free($0) } }
        var pid = pid_t()
        let start = monotonicNanoseconds()
        // SAFETY: argv is a NULL-terminated array of live C strings; environ is this process's environment.
        let result = unsafe copies.withUnsafeBufferPointer { argv in
            unsafe posix_spawn(&pid, program, &actions, nil, argv.baseAddress!, environ)
        }
        guard result == 0 else { throw HostCallError(operation: "start", subject: program, errorNumber: result) }
        var status: Int32 = 0
        var usage = rusage()
        // SAFETY: wait4 writes the status and the resource usage into locals.
        while unsafe wait4(pid, &status, 0, &usage) < 0 {
            guard errno == EINTR else { throw HostCallError(operation: "wait for", subject: program, errorNumber: errno) }
        }
        let elapsed = monotonicNanoseconds() - start
        let signal = status & 0x7F
        return MeasuredRun(nanoseconds: elapsed, exitCode: signal == 0 ? (status >> 8) & 0xFF : 128 + signal,
                           peakResidentKiB: Int(usage.ru_maxrss))
    }
}

extension HostSystem {
    /// Creates a directory (its parent must exist); succeeds when it exists already.
    public static func makeDirectory(_ path: String, mode: UInt32 = 0o755) throws(HostCallError) {
        // SAFETY: mkdir reads the NUL-terminated path during the call.
        guard unsafe mkdir(path, mode_t(mode)) == 0 || errno == EEXIST else {
            throw HostCallError(operation: "create directory", subject: path, errorNumber: errno)
        }
    }

    /// Creates a directory and any missing parents.
    public static func makeDirectories(_ path: String, mode: UInt32 = 0o755) throws(HostCallError) {
        var partial = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            partial += "/" + component
            try makeDirectory(partial, mode: mode)
        }
    }

    /// Makes a directory that must not exist yet (EEXIST otherwise): claiming a name, race-free.
    public static func makeNewDirectory(_ path: String, mode: UInt32) throws(HostCallError) {
        // SAFETY: mkdir reads the NUL-terminated path during the call.
        guard unsafe mkdir(path, mode_t(mode)) == 0 else {
            throw HostCallError(operation: "create directory", subject: path, errorNumber: errno)
        }
    }

    /// Renames `path` to `newPath` in one step. A directory is not put over a non-empty one (ENOTEMPTY or
    /// EEXIST): the first to rename wins.
    public static func renameItem(_ path: String, to newPath: String) throws(HostCallError) {
        // SAFETY: rename reads two NUL-terminated paths during the call.
        guard unsafe rename(path, newPath) == 0 else { throw HostCallError(operation: "rename", subject: path, errorNumber: errno) }
    }

    /// What identifies a file's present contents without reading them: device, inode, size and change time
    /// (`dev:ino:size:ctime`), or nil when there is no such file. A rewritten or replaced file gets another.
    public static func fileStamp(_ path: String) -> String? {
        var info = stat()
        // SAFETY: stat reads the NUL-terminated path and writes only into `info`, a local of the right type.
        guard unsafe stat(path, &info) == 0 else { return nil }
        return "\(info.st_dev):\(info.st_ino):\(info.st_size):\(info.st_ctim.tv_sec).\(info.st_ctim.tv_nsec)"
    }

    /// Makes a symbolic link at `path` pointing at `target`.
    public static func makeSymbolicLink(_ target: String, at path: String) throws(HostCallError) {
        // SAFETY: symlink reads two NUL-terminated strings during the call.
        guard unsafe symlink(target, path) == 0 else { throw HostCallError(operation: "link", subject: path, errorNumber: errno) }
    }

    /// Sets a file's permission bits.
    public static func setMode(_ path: String, _ mode: UInt32) {
        // SAFETY: chmod reads the NUL-terminated path during the call.
        _ = unsafe chmod(path, mode_t(mode))
    }

    /// Removes a directory tree without following links inside it; quietly leaves what it cannot remove.
    public static func removeTree(_ path: String) {
        let headers = (try? FileTree.list(root: path)) ?? []
        for header in headers.reversed() {
            let full = path + "/" + header.path
            // SAFETY: rmdir and unlink read the NUL-terminated path during the call.
            if header.kind == .directory { _ = unsafe rmdir(full) } else { _ = unsafe unlink(full) }
        }
        // SAFETY: as above.
        _ = unsafe rmdir(path)
    }

    /// The full path of `name` found in this process's PATH, or nil.
    public static func findExecutable(_ name: String) -> String? {
        let search = environmentValue("PATH") ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in search.split(separator: ":") where !directory.isEmpty {
            let candidate = directory + "/" + name
            // SAFETY: access reads the NUL-terminated path during the call.
            if unsafe access(candidate, X_OK) == 0, fileKind(at: candidate) == .regularFile { return candidate }
        }
        return nil
    }
}
