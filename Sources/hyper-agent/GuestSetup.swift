import CHyperAgent
import Glibc

/// What the agent does before it can serve: the guest's file systems, its kernel modules and the
/// control channel.
enum GuestSetup {
    /// Where the guest kit lists the modules to load, one path per line, dependencies first.
    static let moduleList = "/etc/hyper/modules"
    /// The control channel: the virtio-console's first port.
    static let channelPath = "/dev/hvc0"

    /// Mounts the guest's file systems (/proc is already there: see the C constructor in CHyperAgent).
    static func mountAll() throws(AgentError) {
        let mounts: [(source: String, target: String, type: String, flags: UInt, options: String?)] = [
            ("sysfs", "/sys", "sysfs", UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), nil),
            ("devtmpfs", "/dev", "devtmpfs", UInt(MS_NOSUID), "mode=0755"),
            ("devpts", "/dev/pts", "devpts", UInt(MS_NOSUID | MS_NOEXEC), "mode=0620,ptmxmode=0666"),
            ("tmpfs", "/dev/shm", "tmpfs", UInt(MS_NOSUID | MS_NODEV), "mode=1777"),
            ("tmpfs", "/tmp", "tmpfs", UInt(MS_NOSUID | MS_NODEV), "mode=1777"),
            ("tmpfs", "/run", "tmpfs", UInt(MS_NOSUID | MS_NODEV), "mode=0755"),
            ("cgroup2", "/sys/fs/cgroup", "cgroup2", UInt(MS_NOSUID | MS_NODEV | MS_NOEXEC), nil),
        ]
        for entry in mounts {
            _ = GuestSystem.makeDirectory(entry.target)
            guard GuestSystem.mount(entry.source, on: entry.target, type: entry.type, flags: entry.flags, options: entry.options) == 0 else {
                throw AgentError.system("mount \(entry.type) on \(entry.target)", errno)
            }
        }
        GuestSystem.makeLink("/proc/self/fd", at: "/dev/fd")
        GuestSystem.makeLink("/dev/pts/ptmx", at: "/dev/ptmx")
    }

    /// Points descriptors 0-2 at the console, since the kernel may start init without them; nothing the
    /// agent opens later can then land on a standard stream by accident.
    static func openStandardStreams() {
        let console = GuestSystem.open("/dev/console", O_RDWR | O_NOCTTY)
        let fd = console >= 0 ? console : GuestSystem.open("/dev/null", O_RDWR)
        guard fd >= 0 else { return }
        for target: Int32 in 0...2 where fcntl(target, F_GETFD) < 0 { dup2(fd, target) }
        if fd > 2 { close(fd) }
    }

    static func loadModules() throws(AgentError) {
        guard let text = GuestSystem.readText(moduleList) else { return }
        for path in text.split(separator: "\n").map(String.init) where !path.isEmpty {
            guard GuestSystem.loadModule(path) else { throw AgentError.system("load module \(path)", errno) }
        }
    }

    /// Opens the control channel, waiting for the device node (devtmpfs makes it asynchronously).
    static func openChannel() throws(AgentError) -> Int32 {
        for _ in 0..<2000 {
            let fd = GuestSystem.open(channelPath, O_RDWR | O_NOCTTY | O_CLOEXEC)
            if fd >= 0 {
                guard chyper_agent_make_raw(fd) == 0 else { throw AgentError.system("make \(channelPath) raw", errno) }
                return fd
            }
            usleep(2_000)
        }
        throw AgentError.system("open \(channelPath)", errno)
    }

    /// Where secrets are delivered as files.
    static let secretsDirectory = "/run/secrets"

    /// Writes the secret files, then makes their folder a read-only mount.
    static func writeSecretFiles(_ files: [(name: String, content: String)]) throws(AgentError) {
        guard !files.isEmpty else { return }
        guard GuestSystem.makeDirectory(secretsDirectory) else { throw AgentError.system("mkdir \(secretsDirectory)", errno) }
        for file in files {
            let path = secretsDirectory + "/" + file.name
            guard GuestSystem.createFile(path, file.content, mode: 0o444) else { throw AgentError.system("write \(path)", errno) }
        }
        guard GuestSystem.mount(secretsDirectory, on: secretsDirectory, type: "none", flags: UInt(MS_BIND), options: nil) == 0,
              GuestSystem.mount("none", on: secretsDirectory, type: "none",
                                flags: UInt(MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC), options: nil) == 0 else {
            throw AgentError.system("make \(secretsDirectory) read-only", errno)
        }
    }

    /// A cgroup for the command with its process limit; returns its `cgroup.procs` path.
    static func commandCgroup(pidsLimit: UInt32) -> String? {
        guard pidsLimit > 0 else { return nil }
        _ = GuestSystem.writeText("/sys/fs/cgroup/cgroup.subtree_control", "+pids")
        let directory = "/sys/fs/cgroup/sandbox"
        _ = GuestSystem.makeDirectory(directory)
        guard GuestSystem.writeText(directory + "/pids.max", String(pidsLimit)) else { return nil }
        return directory + "/cgroup.procs"
    }

    /// The kernel command-line word that makes the agent reset the guest right after `ready` (for timing
    /// this guest to agent-ready in another VMM, which does not speak the protocol).
    static let resetWhenReady = "hyper.benchmark=ready-reset"

    /// The kernel command line, as words.
    static func kernelCommandLine() -> [String] {
        (GuestSystem.readText("/proc/cmdline") ?? "").split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
    }

    static func kernelRelease() -> String {
        GuestSystem.readText("/proc/sys/kernel/osrelease")?.split(separator: "\n").first.map(String.init) ?? "unknown"
    }
}
