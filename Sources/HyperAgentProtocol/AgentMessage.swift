/// The host-guest agent protocol: framed, versioned messages over one byte stream (the guest's
/// virtio-console). `docs/guest-protocol.md` describes it for readers; this file is its definition.
///
/// A frame is a little-endian `UInt32` length, then that many bytes: a one-byte message type and the
/// payload. Payload fields are little-endian integers, byte strings (a `UInt32` length and the bytes),
/// UTF-8 strings (as byte strings) and string lists (a `UInt32` count and the strings).
public enum AgentProtocol {
    /// The protocol version the guest announces in `ready`; the host refuses any other.
    public static let version: UInt32 = 4
    /// The largest frame body either side accepts.
    public static let maximumFrame = 1 << 20
    /// The largest data chunk a sender puts in one frame, leaving room for the header.
    public static let chunkSize = 60 * 1024
    /// How many bytes of one proxied connection a side may send before the other acknowledges them.
    public static let connectionWindow = 256 * 1024
    /// The most proxied connections open at once; the host closes any beyond.
    public static let maximumConnections = 64
}

/// What the host and the agent agree on for the Docker flavour outside the message stream: the kernel
/// command-line words that turn it on (and give dockerd the egress proxy's port), and the virtio-blk serial
/// numbers (at most 20 bytes) the agent finds its two disks by.
public enum DockerFlavourContract {
    public static let commandLineWord = "hyper.docker"
    public static let proxyWordPrefix = "hyper.proxy="
    public static let imageSerial = "hyperctl-docker-img"
    public static let scratchSerial = "hyperctl-scratch"
}

/// What the guest sets up before the first command: the in-guest listener of the egress proxy, and the
/// secrets delivered as files.
public struct AgentSandboxSetup: Equatable, Sendable {
    /// The port the agent listens on at 127.0.0.1 for the proxy; 0 for no network.
    public var proxyPort: UInt16
    /// Files for `/run/secrets` (name, content), read-only once written.
    public var secretFiles: [(name: String, content: String)]

    /// Creates a setup.
    public init(proxyPort: UInt16 = 0, secretFiles: [(name: String, content: String)] = []) {
        self.proxyPort = proxyPort
        self.secretFiles = secretFiles
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.proxyPort == rhs.proxyPort && lhs.secretFiles.map(\.name) == rhs.secretFiles.map(\.name)
            && lhs.secretFiles.map(\.content) == rhs.secretFiles.map(\.content)
    }
}

/// Who the guest is and when: its hostname, fresh entropy for its kernel's random generator, and the wall
/// clock. The host sends it right after `ready` (and after a restore), so that no two sandboxes, and no two
/// clones of one snapshot, share a hostname or random state, and a clone's clock is not the snapshot's.
public struct AgentIdentity: Equatable, Sendable {
    /// The most bytes a hostname may have (the kernel's limit).
    public static let maximumHostnameLength = 64
    /// The most bytes of entropy one message carries.
    public static let maximumSeed = 512

    public var hostname: String
    /// Random bytes from the host, mixed into the guest kernel's pool, which is then reseeded.
    public var seed: [UInt8]
    /// The host's wall clock (CLOCK_REALTIME), nanoseconds since the epoch.
    public var realtimeNanoseconds: Int64

    /// Creates an identity.
    public init(hostname: String, seed: [UInt8], realtimeNanoseconds: Int64) {
        self.hostname = hostname
        self.seed = seed
        self.realtimeNanoseconds = realtimeNanoseconds
    }
}

/// What a `ready` message reports: the guest's protocol version and when it came up.
public struct AgentReady: Equatable, Sendable {
    public var version: UInt32
    /// The guest kernel's release (`uname -r`).
    public var kernelRelease: String
    /// Guest uptime (CLOCK_BOOTTIME) when the agent started as PID 1.
    public var agentStartNanoseconds: UInt64
    /// Guest uptime when the agent had its mounts, modules and channel and sent `ready`.
    public var readyNanoseconds: UInt64

    /// Creates a report.
    public init(version: UInt32 = AgentProtocol.version, kernelRelease: String, agentStartNanoseconds: UInt64, readyNanoseconds: UInt64) {
        self.version = version
        self.kernelRelease = kernelRelease
        self.agentStartNanoseconds = agentStartNanoseconds
        self.readyNanoseconds = readyNanoseconds
    }
}

/// What a `daemon-ready` message reports: when a daemon the guest starts for the sandbox (dockerd) was
/// started and when it first answered, in guest uptime.
public struct AgentDaemonReady: Equatable, Sendable {
    /// The daemon's name.
    public var name: String
    /// Guest uptime when the agent started it.
    public var startNanoseconds: UInt64
    /// Guest uptime when it first answered a request.
    public var readyNanoseconds: UInt64

    /// Creates a report.
    public init(name: String, startNanoseconds: UInt64, readyNanoseconds: UInt64) {
        self.name = name
        self.startNanoseconds = startNanoseconds
        self.readyNanoseconds = readyNanoseconds
    }
}

/// A command to run in the guest. Several may run at once, each under the id the host gave it.
public struct AgentExec: Equatable, Sendable {
    /// The host's name for this command; every message about it carries the id.
    public var id: UInt32
    public var arguments: [String]
    /// `NAME=VALUE` entries; nothing else reaches the command.
    public var environment: [String]
    public var workingDirectory: String
    /// Whether stdin is forwarded (otherwise the command reads /dev/null).
    public var interactive: Bool
    /// Whether the command gets a terminal, of this size.
    public var tty: Bool
    public var rows: UInt16
    public var columns: UInt16
    /// The most processes the command may have at once (a cgroup limit in the guest); 0 for no limit.
    public var pidsLimit: UInt32

    /// Creates a request.
    public init(id: UInt32 = 1, arguments: [String], environment: [String], workingDirectory: String, interactive: Bool = false,
                tty: Bool = false, rows: UInt16 = 24, columns: UInt16 = 80, pidsLimit: UInt32 = 0) {
        self.id = id
        self.pidsLimit = pidsLimit
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.interactive = interactive
        self.tty = tty
        self.rows = rows
        self.columns = columns
    }
}

/// How the guest command ended.
public enum AgentExitStatus: Equatable, Sendable {
    case exited(Int32)
    case signaled(Int32)
}

/// One object of a workspace transfer. Regular files are followed by `fileData` frames holding exactly
/// `size` bytes.
public struct FileHeader: Equatable, Sendable {
    public enum Kind: UInt8, Sendable {
        case regular = 0
        case directory = 1
        case symbolicLink = 2
    }

    /// The path relative to the workspace root, `/`-separated, with no `.`, `..` or empty components.
    public var path: String
    public var kind: Kind
    /// Permission bits (07777).
    public var mode: UInt32
    /// Modification time, nanoseconds since the epoch.
    public var modificationNanoseconds: Int64
    public var size: UInt64
    /// The target of a symbolic link.
    public var linkTarget: String

    /// Creates a header.
    public init(path: String, kind: Kind, mode: UInt32, modificationNanoseconds: Int64, size: UInt64 = 0, linkTarget: String = "") {
        self.path = path
        self.kind = kind
        self.mode = mode
        self.modificationNanoseconds = modificationNanoseconds
        self.size = size
        self.linkTarget = linkTarget
    }
}

/// One protocol message. Types 0x01-0x3F go from host to guest, 0x80-0xBF from guest to host, and the
/// file-transfer messages (0x40-0x4F) go either way.
public enum AgentMessage: Equatable, Sendable {
    // Host to guest.
    case exec(AgentExec)
    /// Bytes for command `id`'s stdin; empty means end of input.
    case stdin(UInt32, [UInt8])
    case signal(UInt32, Int32)
    case resize(UInt32, rows: UInt16, columns: UInt16)
    /// Power the guest off now.
    case shutdown
    /// Sandbox-wide setup, sent once before the workspace.
    case setup(AgentSandboxSetup)
    /// Send back what changed in the workspace since it came in (or since the last time).
    case returnWorkspace
    /// The guest's hostname and entropy, right after `ready`.
    case identity(AgentIdentity)

    // Either way: a connection to the egress proxy, multiplexed on the channel. The guest opens it (a client
    // connected to the agent's listener); data flows both ways, each side acknowledging what it has written
    // out so that the sender keeps at most `connectionWindow` bytes in flight; `connectionClose` says the
    // sender will send nothing more on it.
    case connectionOpen(UInt32)
    case connectionData(UInt32, [UInt8])
    case connectionAcknowledge(UInt32, UInt32)
    case connectionClose(UInt32)

    // Either way: a workspace transfer (host to guest before the first `exec`, guest to host when asked).
    /// The start of a transfer of the tree at this absolute path.
    case filesBegin(root: String)
    case file(FileHeader)
    case fileData([UInt8])
    /// A path the command removed (guest to host only).
    case removed(String)
    /// The end of a transfer.
    case filesEnd

    // Guest to host.
    case ready(AgentReady)
    case started(UInt32, pid: Int32)
    case stdout(UInt32, [UInt8])
    case stderr(UInt32, [UInt8])
    case exited(UInt32, AgentExitStatus)
    /// A daemon the guest started for the sandbox answers (after `ready`; commands wait for it).
    case daemonReady(AgentDaemonReady)
    /// Something in the guest failed; the text says what.
    case failure(String)

    var typeCode: UInt8 {
        switch self {
        case .exec: return 0x01
        case .stdin: return 0x02
        case .signal: return 0x03
        case .resize: return 0x04
        case .shutdown: return 0x05
        case .setup: return 0x06
        case .returnWorkspace: return 0x07
        case .identity: return 0x08
        case .connectionOpen: return 0x50
        case .connectionData: return 0x51
        case .connectionAcknowledge: return 0x52
        case .connectionClose: return 0x53
        case .file: return 0x40
        case .fileData: return 0x41
        case .removed: return 0x42
        case .filesEnd: return 0x43
        case .filesBegin: return 0x44
        case .ready: return 0x80
        case .started: return 0x81
        case .stdout: return 0x82
        case .stderr: return 0x83
        case .exited: return 0x84
        case .failure: return 0x85
        case .daemonReady: return 0x86
        }
    }

    /// The message as one frame, ready to write.
    public var frame: [UInt8] {
        var payload = PayloadWriter()
        payload.bytes.append(typeCode)
        switch self {
        case let .exec(request):
            payload.integer(request.id)
            payload.strings(request.arguments)
            payload.strings(request.environment)
            payload.string(request.workingDirectory)
            payload.integer(UInt8(request.interactive ? 1 : 0))
            payload.integer(UInt8(request.tty ? 1 : 0))
            payload.integer(request.rows)
            payload.integer(request.columns)
            payload.integer(request.pidsLimit)
        case let .fileData(data):
            payload.data(data)
        case let .stdin(id, data), let .stdout(id, data), let .stderr(id, data):
            payload.integer(id)
            payload.data(data)
        case let .signal(id, number):
            payload.integer(id)
            payload.integer(number)
        case let .resize(id, rows, columns):
            payload.integer(id)
            payload.integer(rows)
            payload.integer(columns)
        case .shutdown, .filesEnd, .returnWorkspace:
            break
        case let .setup(setup):
            payload.integer(setup.proxyPort)
            payload.strings(setup.secretFiles.map(\.name))
            payload.strings(setup.secretFiles.map(\.content))
        case let .connectionOpen(id), let .connectionClose(id):
            payload.integer(id)
        case let .connectionData(id, data):
            payload.integer(id)
            payload.data(data)
        case let .connectionAcknowledge(id, count):
            payload.integer(id)
            payload.integer(count)
        case let .file(header):
            payload.string(header.path)
            payload.integer(header.kind.rawValue)
            payload.integer(header.mode)
            payload.integer(header.modificationNanoseconds)
            payload.integer(header.size)
            payload.string(header.linkTarget)
        case let .removed(path), let .filesBegin(path):
            payload.string(path)
        case let .ready(report):
            payload.integer(report.version)
            payload.string(report.kernelRelease)
            payload.integer(report.agentStartNanoseconds)
            payload.integer(report.readyNanoseconds)
        case let .started(id, pid):
            payload.integer(id)
            payload.integer(pid)
        case let .exited(id, status):
            payload.integer(id)
            switch status {
            case let .exited(code):
                payload.integer(UInt8(0))
                payload.integer(code)
            case let .signaled(number):
                payload.integer(UInt8(1))
                payload.integer(number)
            }
        case let .failure(text):
            payload.string(text)
        case let .identity(identity):
            payload.string(identity.hostname)
            payload.data(identity.seed)
            payload.integer(identity.realtimeNanoseconds)
        case let .daemonReady(report):
            payload.string(report.name)
            payload.integer(report.startNanoseconds)
            payload.integer(report.readyNanoseconds)
        }
        var frame = PayloadWriter()
        frame.integer(UInt32(payload.bytes.count))
        return frame.bytes + payload.bytes
    }

    /// Decodes one frame body (type and payload). Every length is checked against what is there.
    public static func decode(body: ArraySlice<UInt8>) throws(AgentProtocolError) -> AgentMessage {
        var reader = PayloadReader(bytes: body)
        let type: UInt8 = try reader.integer()
        let message: AgentMessage
        switch type {
        case 0x01:
            let id: UInt32 = try reader.integer()
            let arguments = try reader.strings()
            let environment = try reader.strings()
            let directory = try reader.string()
            let interactive: UInt8 = try reader.integer()
            let tty: UInt8 = try reader.integer()
            let rows: UInt16 = try reader.integer()
            let columns: UInt16 = try reader.integer()
            let pids: UInt32 = try reader.integer()
            guard !arguments.isEmpty else { throw .malformed("exec without a program") }
            message = .exec(AgentExec(id: id, arguments: arguments, environment: environment, workingDirectory: directory,
                                      interactive: interactive != 0, tty: tty != 0, rows: rows, columns: columns, pidsLimit: pids))
        case 0x02: message = .stdin(try reader.integer(), try reader.data())
        case 0x03: message = .signal(try reader.integer(), try reader.integer())
        case 0x04: message = .resize(try reader.integer(), rows: try reader.integer(), columns: try reader.integer())
        case 0x05: message = .shutdown
        case 0x07: message = .returnWorkspace
        case 0x08:
            let hostname = try reader.string()
            let seed = try reader.data()
            let realtime: Int64 = try reader.integer()
            guard !hostname.isEmpty, hostname.utf8.count <= AgentIdentity.maximumHostnameLength, !hostname.contains("/") else {
                throw .malformed("the hostname \"\(hostname)\"")
            }
            guard seed.count <= AgentIdentity.maximumSeed else { throw .malformed("\(seed.count) bytes of seed (at most \(AgentIdentity.maximumSeed))") }
            message = .identity(AgentIdentity(hostname: hostname, seed: seed, realtimeNanoseconds: realtime))
        case 0x06:
            let port: UInt16 = try reader.integer()
            let names = try reader.strings()
            let contents = try reader.strings()
            guard names.count == contents.count else { throw .malformed("\(names.count) secret names for \(contents.count) contents") }
            for name in names where name.isEmpty || name.contains("/") || name == "." || name == ".." {
                throw .malformed("the secret file name \"\(name)\"")
            }
            message = .setup(AgentSandboxSetup(proxyPort: port, secretFiles: Array(zip(names, contents)).map { (name: $0.0, content: $0.1) }))
        case 0x50: message = .connectionOpen(try reader.integer())
        case 0x51: message = .connectionData(try reader.integer(), try reader.data())
        case 0x52: message = .connectionAcknowledge(try reader.integer(), try reader.integer())
        case 0x53: message = .connectionClose(try reader.integer())
        case 0x40:
            let path = try reader.string()
            let kindCode: UInt8 = try reader.integer()
            guard let kind = FileHeader.Kind(rawValue: kindCode) else { throw .malformed("file kind \(kindCode)") }
            let mode: UInt32 = try reader.integer()
            let modified: Int64 = try reader.integer()
            let size: UInt64 = try reader.integer()
            let target = try reader.string()
            message = .file(FileHeader(path: path, kind: kind, mode: mode & 0o7777, modificationNanoseconds: modified, size: size, linkTarget: target))
        case 0x41: message = .fileData(try reader.data())
        case 0x42: message = .removed(try reader.string())
        case 0x43: message = .filesEnd
        case 0x44: message = .filesBegin(root: try reader.string())
        case 0x80:
            let version: UInt32 = try reader.integer()
            let release = try reader.string()
            message = .ready(AgentReady(version: version, kernelRelease: release, agentStartNanoseconds: try reader.integer(), readyNanoseconds: try reader.integer()))
        case 0x81: message = .started(try reader.integer(), pid: try reader.integer())
        case 0x82: message = .stdout(try reader.integer(), try reader.data())
        case 0x83: message = .stderr(try reader.integer(), try reader.data())
        case 0x84:
            let id: UInt32 = try reader.integer()
            let kind: UInt8 = try reader.integer()
            let value: Int32 = try reader.integer()
            switch kind {
            case 0: message = .exited(id, .exited(value))
            case 1: message = .exited(id, .signaled(value))
            default: throw .malformed("exit kind \(kind)")
            }
        case 0x85: message = .failure(try reader.string())
        case 0x86: message = .daemonReady(AgentDaemonReady(name: try reader.string(), startNanoseconds: try reader.integer(), readyNanoseconds: try reader.integer()))
        default: throw .unknownType(type)
        }
        guard reader.isAtEnd else { throw .malformed("\(reader.remaining) trailing bytes after message type 0x\(String(type, radix: 16))") }
        return message
    }
}

/// Why a frame could not be read. The stream is unusable after any of these.
public enum AgentProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    case frameTooLarge(Int)
    case unknownType(UInt8)
    case malformed(String)
    /// A transferred path that is absolute, empty, too long, or has `.`, `..` or empty components.
    case unsafePath(String)
    /// A file-system call failed: the operation, the path, and errno.
    case fileSystem(String, String, Int32)

    public var description: String {
        switch self {
        case let .frameTooLarge(size): return "agent protocol: a frame of \(size) bytes is over the \(AgentProtocol.maximumFrame)-byte limit"
        case let .unknownType(type): return "agent protocol: unknown message type 0x\(String(type, radix: 16))"
        case let .malformed(what): return "agent protocol: malformed message (\(what))"
        case let .unsafePath(path): return "workspace transfer: refusing the path \"\(path)\" (absolute, empty, or with . or .. components)"
        case let .fileSystem(operation, path, number): return "workspace transfer: \(operation) \(path): \(FileTree.errorText(number))"
        }
    }
}

/// Splits a byte stream into messages. Feed it bytes as they arrive; take messages out with `next()`.
public struct FrameDecoder: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0

    /// Creates an empty decoder.
    public init() {}

    /// Appends received bytes.
    public mutating func append(_ bytes: [UInt8]) {
        if start > 0, start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        buffer += bytes
    }

    /// Bytes received but not yet part of a whole frame.
    public var pendingCount: Int { buffer.count - start }

    /// Returns the next whole message, or nil when more bytes are needed.
    public mutating func next() throws(AgentProtocolError) -> AgentMessage? {
        guard buffer.count - start >= 4 else { return nil }
        let length = (0..<4).reduce(0) { $0 | Int(buffer[start + $1]) << ($1 * 8) }
        guard length >= 1, length <= AgentProtocol.maximumFrame else { throw .frameTooLarge(length) }
        guard buffer.count - start - 4 >= length else { return nil }
        let body = buffer[(start + 4)..<(start + 4 + length)]
        start += 4 + length
        if start > 1 << 20 {
            buffer.removeFirst(start)
            start = 0
        }
        return try AgentMessage.decode(body: body)
    }
}

/// Little-endian fields as the protocol writes them: integers, `u32`-length-prefixed bytes and strings.
/// Snapshot files use the same encoding.
public struct PayloadWriter: Sendable {
    public var bytes: [UInt8] = []

    /// An empty payload.
    public init() {}

    public mutating func integer<T: FixedWidthInteger>(_ value: T) {
        for index in 0..<MemoryLayout<T>.size { bytes.append(UInt8(truncatingIfNeeded: value >> T(index * 8))) }
    }

    public mutating func data(_ data: [UInt8]) {
        integer(UInt32(data.count))
        bytes += data
    }

    public mutating func string(_ text: String) { data(Array(text.utf8)) }

    public mutating func strings(_ list: [String]) {
        integer(UInt32(list.count))
        for text in list { string(text) }
    }
}

/// Reads what `PayloadWriter` wrote; every count is checked against what is left.
public struct PayloadReader: Sendable {
    let bytes: ArraySlice<UInt8>
    var position: Int

    /// A reader over `bytes`.
    public init(bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        position = bytes.startIndex
    }

    public var remaining: Int { bytes.endIndex - position }
    public var isAtEnd: Bool { remaining == 0 }

    public mutating func integer<T: FixedWidthInteger>() throws(AgentProtocolError) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw .malformed("truncated integer") }
        var value = T.zero
        for index in 0..<size { value |= T(truncatingIfNeeded: bytes[position + index]) << T(index * 8) }
        position += size
        return value
    }

    public mutating func data() throws(AgentProtocolError) -> [UInt8] {
        let count: UInt32 = try integer()
        guard Int(count) <= remaining else { throw .malformed("a \(count)-byte field with \(remaining) bytes left") }
        defer { position += Int(count) }
        return Array(bytes[position..<(position + Int(count))])
    }

    public mutating func string() throws(AgentProtocolError) -> String {
        let raw = try data()
        guard let text = String(validating: raw, as: UTF8.self) else { throw .malformed("a string that is not UTF-8") }
        guard !raw.contains(0) else { throw .malformed("a string with a NUL byte") }
        return text
    }

    public mutating func strings() throws(AgentProtocolError) -> [String] {
        let count: UInt32 = try integer()
        // Each string takes at least its four-byte length: a count beyond that is a lie.
        guard Int(count) <= remaining / 4 else { throw .malformed("a list of \(count) strings with \(remaining) bytes left") }
        var list: [String] = []
        for _ in 0..<count { list.append(try string()) }
        return list
    }
}
