#if canImport(Glibc)
import Glibc

/// The file-tree side of a workspace transfer: listing a tree to send it, and writing a received tree
/// without ever leaving the destination root.
///
/// The receiver treats every header as hostile: paths are relative and made of plain components, each
/// parent is opened with `O_NOFOLLOW | O_DIRECTORY` from the root's descriptor, and the last component is
/// created or replaced with `*at` calls relative to its parent, so a symbolic link planted in the tree is
/// never followed.
public enum FileTree {
    /// The largest path accepted, in bytes.
    public static let maximumPath = 4096

    /// Checks a transferred path and splits it into components.
    public static func components(of path: String) throws(AgentProtocolError) -> [String] {
        guard !path.isEmpty, path.utf8.count <= maximumPath, !path.hasPrefix("/") else {
            throw .unsafePath(path)
        }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        for part in parts where part.isEmpty || part == "." || part == ".." || part.utf8.count > 255 {
            throw .unsafePath(path)
        }
        return parts
    }

    /// Lists the tree under `root` (not following symbolic links), parents before children, as headers
    /// with paths relative to `root`. Objects other than files, directories and links are left out.
    public static func list(root: String) throws(AgentProtocolError) -> [FileHeader] {
        var headers: [FileHeader] = []
        var pending = [""]
        while let relative = pending.popLast() {
            let directory = relative.isEmpty ? root : root + "/" + relative
            for name in try entries(of: directory).sorted(by: >) {
                let path = relative.isEmpty ? name : relative + "/" + name
                guard let header = try header(for: root + "/" + path, relative: path) else { continue }
                headers.append(header)
                if header.kind == .directory { pending.append(path) }
            }
        }
        return headers
    }

    /// The header of one object (nil for sockets, devices and pipes).
    public static func header(for fullPath: String, relative: String) throws(AgentProtocolError) -> FileHeader? {
        var info = stat()
        // SAFETY: lstat writes only into `info`, a local of the right type.
        guard unsafe lstat(fullPath, &info) == 0 else { throw .fileSystem("lstat", fullPath, errno) }
        let modified = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
        let mode = UInt32(info.st_mode) & 0o7777
        switch info.st_mode & S_IFMT {
        case S_IFREG:
            return FileHeader(path: relative, kind: .regular, mode: mode, modificationNanoseconds: modified, size: UInt64(info.st_size))
        case S_IFDIR:
            return FileHeader(path: relative, kind: .directory, mode: mode, modificationNanoseconds: modified)
        case S_IFLNK:
            return FileHeader(path: relative, kind: .symbolicLink, mode: 0o777, modificationNanoseconds: modified, linkTarget: try linkTarget(fullPath))
        default:
            return nil
        }
    }

    /// The names in a directory, without `.` and `..`.
    public static func entries(of directory: String) throws(AgentProtocolError) -> [String] {
        // SAFETY: opendir reads the NUL-terminated path for the call; the handle is closed below.
        guard let handle = unsafe opendir(directory) else { throw .fileSystem("open directory", directory, errno) }
        // SAFETY: the handle came from opendir and is closed exactly once.
        defer { unsafe closedir(handle) }
        var names: [String] = []
        // SAFETY: readdir returns a pointer into the handle's buffer, valid until the next readdir; d_name is
        // NUL-terminated inside the dirent, and we copy it at once.
        while let entry = unsafe readdir(handle) {
            let name = unsafe withUnsafePointer(to: entry.pointee.d_name) { pointer in
                unsafe pointer.withMemoryRebound(to: CChar.self, capacity: 256) { unsafe String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func linkTarget(_ path: String) throws(AgentProtocolError) -> String {
        var buffer = [CChar](repeating: 0, count: maximumPath + 1)
        // SAFETY: readlink writes at most `maximumPath` bytes into the buffer, which has one byte more.
        let count = unsafe buffer.withUnsafeMutableBufferPointer { unsafe readlink(path, $0.baseAddress!, maximumPath) }
        guard count >= 0 else { throw .fileSystem("readlink", path, errno) }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Reads one regular file in chunks for a transfer, without following a symbolic link at its path.
///
/// It yields exactly the size the header announced: at most that many bytes, padded with zeros when the
/// file shrank meanwhile, so the receiver's count always matches.
public final class FileChunkReader {
    private let descriptor: Int32
    private let path: String
    private var left: UInt64

    /// Opens `path` to send `size` bytes of it.
    public init(path: String, size: UInt64) throws(AgentProtocolError) {
        // SAFETY: open reads the NUL-terminated path for the call; the descriptor is closed in deinit.
        let fd = unsafe open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw .fileSystem("open", path, errno) }
        descriptor = fd
        self.path = path
        left = size
    }

    deinit { close(descriptor) }

    /// The next chunk (at most `AgentProtocol.chunkSize` bytes), or nil once the announced size was sent.
    public func next() throws(AgentProtocolError) -> [UInt8]? {
        guard left > 0 else { return nil }
        let wanted = Int(min(left, UInt64(AgentProtocol.chunkSize)))
        var buffer = [UInt8](repeating: 0, count: wanted)
        var got = 0
        while true {
            // SAFETY: read writes at most `wanted` bytes into the buffer, which holds exactly that many.
            got = unsafe buffer.withUnsafeMutableBytes { unsafe read(descriptor, $0.baseAddress, wanted) }
            if got < 0 && errno == EINTR { continue }
            break
        }
        guard got >= 0 else { throw .fileSystem("read", path, errno) }
        let chunk = got == 0 ? buffer : Array(buffer[0..<got])  // Zeros when the file shrank.
        left -= UInt64(chunk.count)
        return chunk
    }
}

/// Writes a received tree under a root directory, one header and its data at a time.
///
/// Paths the caller protects (the workspace's `.git/hooks`, say) are skipped and listed in `skipped`.
public final class FileTreeWriter {
    private let rootDescriptor: Int32
    private let protectedPaths: [String]
    private let newObjectOwner: (uid: UInt32, gid: UInt32)?
    private var current: (fd: Int32, header: FileHeader, left: UInt64)?
    /// Paths whose change was not applied because they are protected.
    public private(set) var skipped: [String] = []
    /// Bytes of file data written.
    public private(set) var bytesWritten: UInt64 = 0

    /// Opens `root` (which must be a directory, not a link to one).
    /// - Parameters:
    ///   - protectedPaths: relative paths that are never changed, nor anything under them.
    ///   - newObjectOwner: the owner given to objects this writer creates (when running as root).
    public init(root: String, protectedPaths: [String] = [], newObjectOwner: (uid: UInt32, gid: UInt32)? = nil) throws(AgentProtocolError) {
        // SAFETY: open reads the NUL-terminated path for the call.
        let fd = unsafe open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .fileSystem("open", root, errno) }
        rootDescriptor = fd
        self.protectedPaths = protectedPaths
        self.newObjectOwner = newObjectOwner
    }

    deinit {
        if let current { close(current.fd) }
        close(rootDescriptor)
    }

    /// Whether a file's data is still expected.
    public var expectsData: Bool { current != nil }

    private func isProtected(_ path: String) -> Bool {
        protectedPaths.contains { path == $0 || path.hasPrefix($0 + "/") }
    }

    /// Opens (creating as needed) the directory that holds the last component, never following links.
    private func openParent(_ components: [String], path: String, create: Bool = true) throws(AgentProtocolError) -> Int32 {
        var fd = dup(rootDescriptor)
        guard fd >= 0 else { throw .fileSystem("dup", path, errno) }
        for name in components.dropLast() {
            var next = unsafe openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if next < 0 && errno == ENOENT && create {
                if unsafe mkdirat(fd, name, 0o755) == 0 { chownNew(fd, name) }
                next = unsafe openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            let failure = errno
            close(fd)
            guard next >= 0 else { throw .fileSystem("open the directory of", path, failure) }
            fd = next
        }
        return fd
    }

    private func chownNew(_ parent: Int32, _ name: String) {
        guard let owner = newObjectOwner else { return }
        // SAFETY: fchownat reads the NUL-terminated name; AT_SYMLINK_NOFOLLOW changes a link itself.
        _ = unsafe fchownat(parent, name, owner.uid, owner.gid, AT_SYMLINK_NOFOLLOW)
    }

    /// Removes whatever is at `name` that is not a directory (a directory only when empty).
    private func removeExisting(_ parent: Int32, _ name: String) {
        // SAFETY: unlinkat reads the NUL-terminated name; it never follows a link.
        if unsafe unlinkat(parent, name, 0) != 0 && (errno == EISDIR || errno == EPERM) {
            _ = unsafe unlinkat(parent, name, AT_REMOVEDIR)
        }
    }

    /// Starts one object. A regular file then takes `data` calls until its size is reached.
    public func begin(_ header: FileHeader) throws(AgentProtocolError) {
        guard current == nil else { throw .malformed("a file header before the previous file's data ended") }
        let components = try FileTree.components(of: header.path)
        if isProtected(header.path) {
            skipped.append(header.path)
            if header.kind == .regular && header.size > 0 {
                current = (-1, header, header.size)  // Swallow its data.
            }
            return
        }
        let parent = try openParent(components, path: header.path)
        defer { close(parent) }
        let name = components[components.count - 1]
        switch header.kind {
        case .directory:
            var fd = unsafe openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if fd < 0 {
                removeExisting(parent, name)
                guard unsafe mkdirat(parent, name, 0o700) == 0 else { throw .fileSystem("mkdir", header.path, errno) }
                chownNew(parent, name)
                fd = unsafe openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard fd >= 0 else { throw .fileSystem("open", header.path, errno) }
            }
            _ = fchmod(fd, mode_t(header.mode & 0o7777))
            close(fd)
        case .symbolicLink:
            removeExisting(parent, name)
            // SAFETY: symlinkat reads two NUL-terminated strings; the target is stored, never followed here.
            guard unsafe symlinkat(header.linkTarget, parent, name) == 0 else { throw .fileSystem("symlink", header.path, errno) }
            chownNew(parent, name)
        case .regular:
            let flags = O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC
            var created = false
            var fd = unsafe openat(parent, name, flags | O_EXCL, mode_t(0o600))
            if fd >= 0 {
                created = true
            } else if errno == EEXIST {
                fd = unsafe openat(parent, name, flags, mode_t(0o600))
                if fd < 0 && (errno == ELOOP || errno == EISDIR || errno == ETXTBSY) {
                    removeExisting(parent, name)
                    fd = unsafe openat(parent, name, flags | O_EXCL, mode_t(0o600))
                    created = fd >= 0
                }
            }
            guard fd >= 0 else { throw .fileSystem("create", header.path, errno) }
            if created, let owner = newObjectOwner { _ = fchown(fd, owner.uid, owner.gid) }
            current = (fd, header, header.size)
            if header.size == 0 { try finishFile() }
        }
    }

    /// Writes the next chunk of the current file's data.
    public func data(_ bytes: [UInt8]) throws(AgentProtocolError) {
        guard let file = current else { throw .malformed("file data without a file header") }
        guard UInt64(bytes.count) <= file.left else { throw .malformed("more data than \(file.header.path)'s announced size") }
        if file.fd >= 0 {
            var offset = 0
            while offset < bytes.count {
                // SAFETY: write reads `bytes.count - offset` bytes from inside the array.
                let wrote = unsafe bytes.withUnsafeBytes { unsafe write(file.fd, $0.baseAddress! + offset, bytes.count - offset) }
                if wrote < 0 && errno == EINTR { continue }
                guard wrote > 0 else { throw .fileSystem("write", file.header.path, errno) }
                offset += wrote
            }
            bytesWritten += UInt64(bytes.count)
        }
        current?.left -= UInt64(bytes.count)
        if current?.left == 0 { try finishFile() }
    }

    private func finishFile() throws(AgentProtocolError) {
        guard let file = current else { return }
        current = nil
        guard file.fd >= 0 else { return }
        defer { close(file.fd) }
        _ = fchmod(file.fd, mode_t(file.header.mode & 0o7777))
        let seconds = file.header.modificationNanoseconds / 1_000_000_000
        let nanoseconds = file.header.modificationNanoseconds % 1_000_000_000
        let time = timespec(tv_sec: Int(seconds), tv_nsec: Int(nanoseconds))
        var times = [time, time]
        // SAFETY: futimens reads exactly two timespec values from the array.
        _ = unsafe futimens(file.fd, &times)
    }

    /// Removes an object the sender no longer has: a file or link, or a directory once it is empty.
    public func remove(_ path: String) throws(AgentProtocolError) {
        let components = try FileTree.components(of: path)
        if isProtected(path) {
            skipped.append(path)
            return
        }
        let parent: Int32
        do {
            parent = try openParent(components, path: path, create: false)
        } catch {
            return  // Its directory is gone already.
        }
        defer { close(parent) }
        removeExisting(parent, components[components.count - 1])
    }

    /// Checks that the transfer did not stop in the middle of a file.
    public func finish() throws(AgentProtocolError) {
        if let file = current, file.left > 0 {
            throw .malformed("the transfer ended \(file.left) bytes short of \(file.header.path)")
        }
    }
}

extension FileTree {
    /// The text for an errno value.
    public static func errorText(_ number: Int32) -> String {
        // SAFETY: strerror returns a pointer to a NUL-terminated string that we copy at once.
        guard let text = unsafe strerror(number) else { return "error \(number)" }
        return unsafe String(cString: text)
    }
}
#endif
