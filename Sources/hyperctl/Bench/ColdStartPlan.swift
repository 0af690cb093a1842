import Hyper

/// One row of the cold-start benchmark: a command to time, or the reason it cannot be timed here.
struct BenchRow: Equatable, Sendable {
    enum Kind: String, Sendable {
        /// One of hyperctl's backends (or the VMM alone).
        case backend
        /// Another tool with like isolation, for comparison.
        case peer
        /// The floor: spawning a process that does nothing.
        case reference
    }

    var name: String
    var kind: Kind
    /// The command, or nil when the row is skipped.
    var arguments: [String]?
    /// Why the row is not measured here.
    var skipReason: String?
    /// Where the row's command writes a run report (the kvm rows, for their agent-ready figures).
    var reportPath: String?

    /// Whether the results show this row's launch-to-agent-ready time too (the kvm rows, measured or not).
    var hasAgentReadyRow: Bool { name == "kvm" || name == "kvm-cold-boot" }

    static func measured(_ name: String, _ kind: Kind, _ arguments: [String], report: String? = nil) -> BenchRow {
        BenchRow(name: name, kind: kind, arguments: arguments, skipReason: nil, reportPath: report)
    }

    static func skipped(_ name: String, _ kind: Kind, _ reason: String) -> BenchRow {
        BenchRow(name: name, kind: kind, arguments: nil, skipReason: reason, reportPath: nil)
    }
}

/// Decides the cold-start rows for this host: hyperctl's backends, the VMM alone, and the peers that are
/// installed, each with its command, or skipped with the reason. It owns a scratch folder (an empty
/// workspace, the exported tiny guest, a crun bundle) that `cleanUp` removes.
struct ColdStartPlan {
    static let backendRows = ["fake", "process", "kvm", "kvm-cold-boot", "kvm-minimal"]
    static let peerRows = ["bwrap", "crun", "qemu-microvm", "qemu-microvm-linux"]

    let scratch: String
    let workspace: String
    var rows: [BenchRow] = []

    /// Plans the rows named in `backends` and `peers` (all when nil), plus the `true` reference row.
    init(hyperctl: String, registry: BackendRegistry, backends: [String]?, peers: [String]?) throws(HyperError) {
        scratch = "/tmp/hyperctl-bench-\(HostSystem.processID)-\(HostSystem.monotonicNanoseconds())"
        workspace = scratch + "/workspace"
        do {
            try HostSystem.makeDirectory(scratch, mode: 0o700)
            try HostSystem.makeDirectory(workspace)
        } catch {
            throw HyperError(.hostFailure, "bench: \(error)")
        }
        let kvmProbe = registry.backend(named: "kvm")?.probe()
        for name in backends ?? Self.backendRows {
            rows.append(backendRow(name, hyperctl: hyperctl, registry: registry, kvmProbe: kvmProbe))
        }
        for name in peers ?? Self.peerRows {
            rows.append(peerRow(name, hyperctl: hyperctl, kvmProbe: kvmProbe))
        }
        rows.append(.measured("true", .reference, [HostSystem.findExecutable("true") ?? "/bin/true"]))
    }

    func cleanUp() { HostSystem.removeTree(scratch) }

    private func backendRow(_ name: String, hyperctl: String, registry: BackendRegistry, kvmProbe: ProbeResult?) -> BenchRow {
        switch name {
        case "fake", "process":
            guard let probe = registry.backend(named: name)?.probe() else { return .skipped(name, .backend, "not in this build") }
            guard probe.isAvailable else { return .skipped(name, .backend, "\(name) is not available here: \(probe.reason)") }
            return .measured(name, .backend, [hyperctl, "run", "--backend", name, "--workspace", workspace, "--", name == "fake" ? "true" : "/bin/true"])
        case "kvm", "kvm-cold-boot":
            guard let probe = kvmProbe, probe.isAvailable else { return .skipped(name, .backend, "kvm is not available here: \(kvmProbe?.reason ?? "not in this build")") }
            guard probe.isAccelerated == true else {
                return .skipped(name, .backend, "kvm here is not hardware-accelerated (\(probe.reason)); a Linux guest would take minutes (Tests/Nested/run.sh reports its phase shares under emulation)")
            }
            do {
                _ = try GuestKit.locate()
            } catch {
                return .skipped(name, .backend, error.message)
            }
            // kvm: the default start path (its boot snapshot, made by the first run); kvm-cold-boot: a boot.
            let report = scratch + "/\(name)-report.json"
            let flags = name == "kvm" ? [] : ["--cold-boot"]
            return .measured(name, .backend, [hyperctl, "run", "--backend", "kvm"] + flags + ["--workspace", workspace, "--report", report, "--", "true"], report: report)
        case "kvm-minimal":
            guard let probe = kvmProbe, probe.isAvailable else { return .skipped(name, .backend, "no usable /dev/kvm: \(kvmProbe?.reason ?? "not in this build")") }
            return .measured(name, .backend, [hyperctl, "boot", "--backend", "kvm", "--kernel", BootCommand.builtinHello])
        default:
            return .skipped(name, .backend, "unknown row (rows: \((Self.backendRows + Self.peerRows).joined(separator: ", ")))")
        }
    }

    private func peerRow(_ name: String, hyperctl: String, kvmProbe: ProbeResult?) -> BenchRow {
        switch name {
        case "bwrap":
            guard let bwrap = HostSystem.findExecutable("bwrap") else { return .skipped(name, .peer, "bubblewrap is not installed (Scripts/setup.sh installs it)") }
            return .measured(name, .peer, [bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
                                           "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/lib", "/lib", "--symlink", "usr/bin", "/bin",
                                           "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind", workspace, workspace, "/bin/true"])
        case "crun":
            guard let crun = HostSystem.findExecutable("crun") else { return .skipped(name, .peer, "crun is not installed (Scripts/setup.sh installs it)") }
            return crunRow(crun)
        case "qemu-microvm":
            guard let probe = kvmProbe, probe.isAvailable else { return .skipped(name, .peer, "no usable /dev/kvm") }
            guard let qemu = HostSystem.findExecutable("qemu-system-x86_64") else { return .skipped(name, .peer, "qemu-system-x86 is not installed") }
            let guest = scratch + "/tiny.elf"
            do {
                try HostSystem.writeFile(guest, TinyGuest.serialHelloImage())
            } catch {
                return .skipped(name, .peer, "cannot write the tiny guest: \(error)")
            }
            // QEMU on KVM without hardware virtualization needs the arch-capabilities MSR left out.
            return .measured(name, .peer, [qemu, "-M", "microvm,rtc=off", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-m", "64",
                                           "-kernel", guest, "-nodefaults", "-no-reboot", "-serial", "stdio", "-device", "i8042", "-display", "none"])
        case "qemu-microvm-linux":
            guard kvmProbe?.isAccelerated == true else {
                return .skipped(name, .peer, "needs a hardware-accelerated /dev/kvm to boot Linux")
            }
            guard let qemu = HostSystem.findExecutable("qemu-system-x86_64") else { return .skipped(name, .peer, "qemu-system-x86 is not installed") }
            let kit: GuestKit
            do {
                kit = try GuestKit.locate()
            } catch {
                return .skipped(name, .peer, error.message)
            }
            return .measured(name, .peer, Self.qemuLinuxArguments(qemu: qemu, kit: kit))
        default:
            return .skipped(name, .peer, "unknown row (rows: \((Self.backendRows + Self.peerRows).joined(separator: ", ")))")
        }
    }

    /// QEMU microvm booting the guest kit with the same devices and command line as the kvm backend, plus the
    /// word that makes the agent reset once it is ready: launch to agent-ready and reset, with no protocol.
    static func qemuLinuxArguments(qemu: String, kit: GuestKit) -> [String] {
        [qemu, "-M", "microvm,rtc=off", "-enable-kvm", "-cpu", "host", "-m", "512", "-smp", "1",
         "-kernel", kit.kernelPath, "-initrd", kit.initrdPath,
         "-append", MicroVMSandbox.kernelCommandLine + " hyper.benchmark=ready-reset",
         "-nodefaults", "-no-reboot", "-display", "none", "-serial", "null", "-device", "i8042",
         "-device", "virtio-serial-device", "-chardev", "null,id=agent", "-device", "virtconsole,chardev=agent",
         "-device", "virtio-rng-device"]
    }

    /// An OCI bundle whose root holds busybox-static as /bin/true, run by crun in its own state folder.
    private func crunRow(_ crun: String) -> BenchRow {
        let bundle = scratch + "/crun-bundle"
        guard let busybox = ["/bin/busybox", "/usr/bin/busybox"].first(where: { HostSystem.fileKind(at: $0) == .regularFile }) else {
            return .skipped("crun", .peer, "needs busybox-static for the container's root (Scripts/setup.sh installs it)")
        }
        let config = """
        {"ociVersion": "1.0.2",
         "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/bin/true"], "env": ["PATH=/bin"], "cwd": "/",
                     "noNewPrivileges": true},
         "root": {"path": "rootfs", "readonly": true},
         "hostname": "bench",
         "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
                    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}],
         "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}}
        """
        do {
            for folder in [bundle, bundle + "/rootfs", bundle + "/rootfs/bin", bundle + "/rootfs/proc", bundle + "/rootfs/dev",
                           bundle + "/rootfs/tmp", scratch + "/crun-state"] {
                try HostSystem.makeDirectory(folder)
            }
            try HostSystem.writeFile(bundle + "/rootfs/bin/busybox", try HostSystem.readFile(busybox, limit: 64 << 20))
            HostSystem.setMode(bundle + "/rootfs/bin/busybox", 0o755)
            try HostSystem.makeSymbolicLink("busybox", at: bundle + "/rootfs/bin/true")
            try HostSystem.writeFile(bundle + "/config.json", Array(config.utf8))
        } catch {
            return .skipped("crun", .peer, "cannot build the OCI bundle: \(error)")
        }
        // Each run gets the same container id; `crun run` deletes the container when it exits.
        let arguments = [crun, "--root", scratch + "/crun-state", "run", "--bundle", bundle, "hyperctl-bench-\(HostSystem.processID)"]
        let errors = scratch + "/crun-errors"
        guard let trial = try? HostSystem.runMeasured(arguments, errorPath: errors), trial.exitCode == 0 else {
            let said = HostSystem.readText(errors)?.split(separator: "\n").first.map(String.init) ?? "no message"
            return .skipped("crun", .peer, "crun cannot run a container on this host: \(said)")
        }
        return .measured("crun", .peer, arguments)
    }
}
