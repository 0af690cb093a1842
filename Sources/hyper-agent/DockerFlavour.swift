import CHyperAgent
import Glibc
import HyperAgentProtocol

/// The Docker flavour's root file system (kernel command line `hyper.docker`): the shared read-only image
/// (a Debian root with docker.io) under a writable overlay whose upper layer, and `/var/lib/docker` and
/// `/var/lib/containerd`, live on the sandbox's own scratch disk. The agent moves itself into it, as an
/// initramfs's switch_root does, before it says it is ready. See docs/docker.md.
enum DockerRoot {
    private static let base = "/mnt/base"
    private static let scratch = "/mnt/scratch"
    private static let newRoot = "/mnt/root"
    /// Folders of the scratch disk bound into the new root: Docker's storage cannot live on an overlay.
    private static let scratchBinds = [("docker", "/var/lib/docker"), ("containerd", "/var/lib/containerd")]
    /// The mounts of the initramfs that move into the new root.
    private static let movedMounts = ["/dev", "/proc", "/sys", "/tmp", "/run"]

    /// Builds the root and moves the agent into it.
    static func assemble(kernelRelease: String) throws(AgentError) {
        let baseDevice = try disk(serial: DockerFlavourContract.imageSerial, fallback: "vda")
        let scratchDevice = try disk(serial: DockerFlavourContract.scratchSerial, fallback: "vdb")
        for folder in [base, scratch, newRoot] where !GuestSystem.makeDirectory(folder) { throw AgentError.system("mkdir \(folder)", errno) }
        try mount(baseDevice, on: base, type: "ext4", flags: UInt(MS_RDONLY | MS_NODEV), options: "noload")

        let modules = "\(base)/usr/lib/modules/\(kernelRelease)"
        // SAFETY: access reads the NUL-terminated path during the call.
        guard unsafe access(modules, F_OK) == 0 else {
            let built = GuestSystem.readText("\(base)/etc/hyper-kernel-release")?.split(separator: "\n").first.map(String.init) ?? "another kernel"
            throw AgentError.setup("the Docker image has no modules for kernel \(kernelRelease) (it was built for \(built)): rebuild it with Scripts/docker-image.sh")
        }
        if !(GuestSystem.readText("/proc/filesystems") ?? "").contains("\toverlay\n") {
            let overlay = "\(modules)/kernel/fs/overlayfs/overlay.ko"
            guard GuestSystem.loadModule(overlay) else { throw AgentError.system("load module \(overlay)", errno) }
        }

        if !hasExt4(scratchDevice) { try format(scratchDevice) }
        // noinit_itable: the kernel does not zero the inode tables in the background, which would fill
        // the sparse scratch file on the host for nothing.
        try mount(scratchDevice, on: scratch, type: "ext4", flags: UInt(MS_NODEV | MS_NOATIME), options: "noinit_itable")
        for folder in ["root", "root/upper", "root/work"] + scratchBinds.map(\.0) where !GuestSystem.makeDirectory("\(scratch)/\(folder)") {
            throw AgentError.system("mkdir \(scratch)/\(folder)", errno)
        }
        try mount("overlay", on: newRoot, type: "overlay", flags: 0,
                  options: "lowerdir=\(base),upperdir=\(scratch)/root/upper,workdir=\(scratch)/root/work")
        for (folder, target) in scratchBinds {
            guard GuestSystem.makeDirectory(newRoot + target) else { throw AgentError.system("mkdir \(newRoot + target)", errno) }
            try mount("\(scratch)/\(folder)", on: newRoot + target, type: "none", flags: UInt(MS_BIND), options: nil)
        }
        for mountPoint in movedMounts {
            guard GuestSystem.makeDirectory(newRoot + mountPoint) else { throw AgentError.system("mkdir \(newRoot + mountPoint)", errno) }
            try mount(mountPoint, on: newRoot + mountPoint, type: "none", flags: UInt(MS_MOVE), options: nil)
        }
        guard GuestSystem.switchRoot(to: newRoot) else { throw AgentError.system("switch the root to \(newRoot)", errno) }
    }

    /// The device node of the virtio disk with this serial number (`/sys/block/vdX/serial`), or of the
    /// `fallback` name on a kernel without the attribute. Waits for the node: devtmpfs makes it asynchronously.
    private static func disk(serial: String, fallback: String) throws(AgentError) -> String {
        var name: String?
        var sawSerials = false
        for letter in "abcdefghijklmnop" {
            guard let text = GuestSystem.readText("/sys/block/vd\(letter)/serial") else { continue }
            sawSerials = true
            if text.split(separator: "\n").first.map(String.init) == serial { name = "vd\(letter)" }
        }
        // SAFETY: access reads the NUL-terminated path during the call (as below).
        if name == nil, !sawSerials, unsafe access("/sys/block/\(fallback)", F_OK) == 0 { name = fallback }
        guard let name else { throw AgentError.setup("the sandbox has no disk \(serial)") }
        let path = "/dev/\(name)"
        for _ in 0..<2000 where unsafe access(path, F_OK) != 0 { usleep(2_000) }
        return path
    }

    /// Whether the device holds an ext2/3/4 file system (its superblock's magic number, 0xEF53 at 1080).
    private static func hasExt4(_ device: String) -> Bool {
        GuestSystem.read(path: device, offset: 1080, count: 2) == [0x53, 0xEF]
    }

    /// Makes an ext4 file system on a fresh scratch disk with the image's own mke2fs, through the image's
    /// dynamic loader (the initramfs has no C library). Lazy inode-table and journal initialization keep
    /// it quick and the scratch file sparse.
    private static func format(_ device: String) throws(AgentError) {
        let libraries = "\(base)/usr/lib/x86_64-linux-gnu"
        let arguments = ["\(libraries)/ld-linux-x86-64.so.2", "--library-path", libraries, "\(base)/sbin/mke2fs",
                         "-q", "-F", "-t", "ext4", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", "-L", "hyper-scratch", device]
        let pid = GuestSystem.spawn(arguments: arguments, environment: ["MKE2FS_CONFIG=\(base)/etc/mke2fs.conf"], directory: "/",
                                    streams: [0, 1, 2], terminal: nil, cgroupProcs: nil)
        guard pid > 0 else { throw AgentError.system("start mke2fs", errno) }
        guard let status = GuestSystem.waitForChild(pid), status == 0 else {
            throw AgentError.setup("mke2fs could not format the scratch disk \(device)")
        }
    }

    private static func mount(_ source: String, on target: String, type: String, flags: UInt, options: String?) throws(AgentError) {
        guard GuestSystem.mount(source, on: target, type: type, flags: flags, options: options) == 0 else {
            throw AgentError.system("mount \(source) on \(target)", errno)
        }
    }
}

/// The sandbox's private Docker daemon: containerd and dockerd, started by the agent in the Docker root
/// before it says it is ready, so that their start-up overlaps the host's. The daemon is ready when it
/// answers `GET /_ping` on its socket; the agent then tells the host (`daemon-ready`). The socket exists
/// only inside the guest.
final class DockerDaemon {
    static let socketPath = "/run/docker.sock"
    /// How often the socket is tried while nobody listens on it.
    private static let retryNanoseconds: UInt64 = 10_000_000

    private enum Probe {
        /// Nobody listens yet: try again at this uptime.
        case waiting(until: UInt64)
        /// Connected and asked: the answer so far.
        case asked(Int32, [UInt8])
        case ready
    }

    let startNanoseconds: UInt64
    private let daemons: [(name: String, pid: pid_t, log: String)]
    private var probe: Probe

    /// Starts containerd and dockerd, logging to /var/log/{containerd,dockerd}.log.
    init(proxyPort: UInt16?) throws(AgentError) {
        startNanoseconds = GuestSystem.uptimeNanoseconds()
        _ = chyper_agent_loopback_up()  // Containers with host networking, and the proxy, are reached on it.
        var environment = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"]
        if let proxyPort {
            let url = "http://127.0.0.1:\(proxyPort)"
            environment += ["HTTP_PROXY=\(url)", "HTTPS_PROXY=\(url)", "http_proxy=\(url)", "https_proxy=\(url)", "NO_PROXY=localhost,127.0.0.1"]
        }
        let programs: [(name: String, arguments: [String])] = [
            ("containerd", ["/usr/bin/containerd"]),
            ("dockerd", ["/usr/sbin/dockerd", "--host=unix://\(Self.socketPath)", "--containerd=/run/containerd/containerd.sock",
                         "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=overlay2", "--log-level=warn"]),
        ]
        var started: [(name: String, pid: pid_t, log: String)] = []
        for program in programs {
            let log = "/var/log/\(program.name).log"
            let logFile = GuestSystem.openLog(log)
            guard logFile >= 0 else { throw AgentError.system("open \(log)", errno) }
            let input = GuestSystem.open("/dev/null", O_RDONLY | O_CLOEXEC)
            let pid = GuestSystem.spawn(arguments: program.arguments, environment: environment, directory: "/",
                                        streams: [input, logFile, logFile], terminal: nil, cgroupProcs: nil)
            close(input)
            close(logFile)
            guard pid > 0 else { throw AgentError.system("start \(program.name)", errno) }
            started.append((program.name, pid, log))
        }
        daemons = started
        probe = .waiting(until: startNanoseconds)
    }

    var isReady: Bool {
        if case .ready = probe { return true }
        return false
    }

    /// The descriptor to watch while the daemon is asked, with its events.
    var watched: [(Int32, Int16)] {
        if case let .asked(fd, _) = probe { return [(fd, Int16(POLLIN))] }
        return []
    }

    /// How long the agent may wait before `advance` has work: -1 for no limit.
    var pollTimeoutMilliseconds: Int32 {
        guard case let .waiting(until) = probe else { return -1 }
        let now = GuestSystem.uptimeNanoseconds()
        return until > now ? Int32((until - now) / 1_000_000 + 1) : 0
    }

    /// Moves the probe on; returns the report once the daemon has answered.
    func advance() -> AgentDaemonReady? {
        switch probe {
        case .ready:
            return nil
        case let .waiting(until):
            guard GuestSystem.uptimeNanoseconds() >= until else { return nil }
            let fd = GuestSystem.connectUnix(Self.socketPath)
            // A new socket takes the request whole; dockerd answers once its API serves.
            guard fd >= 0, GuestSystem.send(fd, Array("GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n".utf8), from: 0) > 0 else {
                if fd >= 0 { close(fd) }
                probe = .waiting(until: GuestSystem.uptimeNanoseconds() + Self.retryNanoseconds)
                return nil
            }
            probe = .asked(fd, [])
            return nil
        case .asked(let fd, var answer):
            let bytes = GuestSystem.read(fd, count: 4096)
            if let bytes, !bytes.isEmpty {
                answer += bytes
                probe = .asked(fd, answer)
                return nil
            }
            if bytes == nil, errno == EAGAIN || errno == EINTR { return nil }
            close(fd)
            // The whole answer is in: "HTTP/1.x 200 OK ... OK" means the API serves.
            if String(decoding: answer, as: UTF8.self).hasPrefix("HTTP/1."), answer.count > 12, String(decoding: answer[9..<12], as: UTF8.self) == "200" {
                probe = .ready
                return AgentDaemonReady(name: "dockerd", startNanoseconds: startNanoseconds, readyNanoseconds: GuestSystem.uptimeNanoseconds())
            }
            probe = .waiting(until: GuestSystem.uptimeNanoseconds() + Self.retryNanoseconds)
            return nil
        }
    }

    /// Why the sandbox cannot go on when a daemon ended before it was ready (its log's last lines), or nil.
    func failure(whenEnded pid: pid_t, status: Int32) -> String? {
        guard !isReady, let daemon = daemons.first(where: { $0.pid == pid }) else { return nil }
        let how = status & 0x7F == 0 ? "exit status \((status >> 8) & 0xFF)" : "signal \(status & 0x7F)"
        let tail = (GuestSystem.readText(daemon.log) ?? "").split(separator: "\n").suffix(8).joined(separator: "\n  ")
        return "\(daemon.name) ended before it was ready (\(how)); the end of \(daemon.log):\n  \(tail)"
    }
}
