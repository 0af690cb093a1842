import Hyper

/// The `kvm` backend: each sandbox is a microVM with its own Linux kernel, on /dev/kvm.
///
/// On a host whose KVM is not hardware-accelerated it refuses to launch unless the caller allows it, since a
/// Linux guest would crawl there.
public struct KVMBackend: Backend {
    public let name = "kvm"
    public let isolation = IsolationLevel.hardwareVM
    /// What a microVM enforces: its size (memory, vCPUs), a process limit (a cgroup in the guest), the time
    /// limit, stdin or a terminal relayed through the guest agent, and secrets. There is no network device at
    /// all: an allowlist is served by the host's egress proxy through the guest agent's listener.
    public let capabilities: Set<SandboxFeature> = [.memoryLimit, .cpuLimit, .pidsLimit, .timeout, .interactive, .tty,
                                                     .networkAllowlist, .secrets, .docker]
    private let gatherFacts: @Sendable () -> KVMHostFacts
    /// The default guest's snapshots at agent-ready: the default start path.
    public let bootSnapshots: BootSnapshotCache
    /// Where the default guest kit is (`GuestKit.defaultDirectory()` unless a test says otherwise).
    private let kitDirectory: String?

    /// Creates the backend. Tests pass their own facts to check probe verdicts and selection, and their own
    /// boot snapshot cache and guest kit.
    public init(facts: @escaping @Sendable () -> KVMHostFacts = { KVMHostFacts.gather() }, bootSnapshots: BootSnapshotCache = BootSnapshotCache(),
                kitDirectory: String? = nil) {
        gatherFacts = facts
        self.bootSnapshots = bootSnapshots
        self.kitDirectory = kitDirectory
    }

    public func probe() -> ProbeResult { KVMProbe.evaluate(gatherFacts()) }

    /// Checks that KVM can run here at an acceptable speed, or was allowed to run slowly; returns the probe.
    @discardableResult
    func checkUsable(allowUnaccelerated: Bool) throws(KVMError) -> ProbeResult {
        let result = probe()
        guard result.isAvailable else { throw KVMError.unavailable(result.reason) }
        if result.isAccelerated == false, !allowUnaccelerated {
            throw KVMError.unaccelerated(result.reason)
        }
        return result
    }

    public func launch(_ spec: SandboxSpec, options: LaunchOptions) throws(HyperError) -> any SandboxHandle {
        let start = try origin(of: spec, options: options)
        let bootTimeout = try prepare(start.spec, options: options)
        #if os(Linux)
        let signals = try HostSignalRelay()
        return try start.launch { (origin) throws(HyperError) in
            try MicroVMSandbox(spec: start.spec, options: options, origin: origin, hypervisor: KVMHypervisor(), signals: signals, bootTimeout: bootTimeout)
        }
        #else
        throw KVMError.unavailable("KVM needs Linux").hyperError
        #endif
    }

    /// A microVM that stays up for many commands; its time limit is the sandbox's life.
    public func launchSession(_ spec: SandboxSpec, options: LaunchOptions) throws(HyperError) -> any SessionSandbox {
        let start = try origin(of: spec, options: options)
        var sessionSpec = start.spec
        sessionSpec.interactive = false
        sessionSpec.tty = false
        let bootTimeout = try prepare(sessionSpec, options: options)
        #if os(Linux)
        return try start.launch { (origin) throws(HyperError) in
            try MicroVMSession(spec: sessionSpec, options: options, origin: origin, hypervisor: KVMHypervisor(), bootTimeout: bootTimeout)
        }
        #else
        throw KVMError.unavailable("KVM needs Linux").hyperError
        #endif
    }

    /// Checks the host and the spec; returns how long the guest may take to boot (an unaccelerated host is
    /// allowed only when forced, and its guests boot very slowly).
    func prepare(_ spec: SandboxSpec, options: LaunchOptions) throws(HyperError) -> Duration {
        let host: ProbeResult
        do {
            host = try checkUsable(allowUnaccelerated: options.allowUnaccelerated)
        } catch {
            throw error.hyperError
        }
        try checkSupport(spec, options: options)
        if host.isAccelerated == false { return .seconds(3600) }
        return spec.docker ? DockerFlavour.bootTimeout : MicroVMSandbox.defaultBootTimeout
    }

    /// How a sandbox starts: its spec, where its machine comes from, and for a restore from the boot
    /// snapshot cache, the cold boot to fall back on when that snapshot is refused.
    struct Start {
        var spec: SandboxSpec
        var origin: MicroVMSandbox.Origin
        var coldBoot: (kit: GuestKit, plan: BootSnapshotPlan)?

        /// Builds the sandbox from `origin`. When a cached snapshot cannot be restored (corrupt, of another
        /// CPU, refused by KVM), the sandbox boots cold instead, and once that boot has started the cached
        /// snapshot is removed so that the boot saves a new one at agent-ready. (When the boot fails too, the
        /// fault was not the snapshot's, and it stays.)
        func launch<Sandbox>(_ build: (MicroVMSandbox.Origin) throws(HyperError) -> Sandbox) throws(HyperError) -> Sandbox {
            do {
                return try build(origin)
            } catch {
                guard let (kit, plan) = coldBoot else { throw error }
                var replacing = plan
                replacing.replacing = error.message
                let sandbox = try build(.boot(kit, saving: replacing))
                plan.cache.discard(plan.folder)
                return sandbox
            }
        }
    }

    /// Where the machine comes from: the options' snapshot (whose size and flavour the spec takes where it
    /// sets none); else for the default guest (plain or Docker) its boot snapshot, or a cold boot that saves
    /// one (the default path; not with `coldBoot`, disks, or another kernel or initramfs); else the kit.
    func origin(of spec: SandboxSpec, options: LaunchOptions) throws(HyperError) -> Start {
        if let folder = options.snapshotPath {
            let snapshot = try SandboxSnapshot.read(from: folder)
            var restored = spec
            if restored.limits.memoryBytes == nil { restored.limits.memoryBytes = snapshot.memoryBytes }
            if restored.limits.cpus == nil { restored.limits.cpus = Double(snapshot.vcpus) }
            if snapshot.isDocker { restored.docker = true }
            return Start(spec: restored, origin: .snapshot(snapshot))
        }
        let kit = try kit(for: options)
        guard !options.coldBoot, options.kernelPath == nil, options.initrdPath == nil, options.disks.isEmpty else {
            return Start(spec: spec, origin: .boot(kit))
        }
        let size = MicroVMSandbox.machineSize(for: spec)
        let key = BootSnapshotCache.Key(kit: kit, commandLine: MicroVMSandbox.kernelCommandLine(for: spec), memoryBytes: size.memoryBytes, vcpus: size.vcpus,
                                        dockerImage: spec.docker ? DockerFlavour.defaultImagePath() : nil)
        guard var plan = bootSnapshots.plan(for: key) else { return Start(spec: spec, origin: .boot(kit)) }
        let folder = plan.folder
        do {
            guard let snapshot = try bootSnapshots.snapshot(in: folder, for: key) else { return Start(spec: spec, origin: .boot(kit, saving: plan)) }
            return Start(spec: spec, origin: .snapshot(snapshot), coldBoot: (kit, plan))
        } catch {
            bootSnapshots.discard(folder)
            plan.replacing = error.message
            return Start(spec: spec, origin: .boot(kit, saving: plan))
        }
    }

    /// The guest kit, with the options' kernel or initrd in place of its own.
    func kit(for options: LaunchOptions) throws(HyperError) -> GuestKit {
        switch (options.kernelPath, options.initrdPath) {
        case let (kernel?, initrd?): return GuestKit(kernelPath: kernel, initrdPath: initrd)
        case (nil, nil): return try GuestKit.locate(in: kitDirectory ?? GuestKit.defaultDirectory())
        case let (kernel, initrd):
            let base = try GuestKit.locate(in: kitDirectory ?? GuestKit.defaultDirectory())
            return GuestKit(kernelPath: kernel ?? base.kernelPath, initrdPath: initrd ?? base.initrdPath)
        }
    }

    /// Removes boot snapshots that a crashed sandbox left half-written, and those that can never be used again.
    public func sweepLeftovers() {
        bootSnapshots.sweepStaging()
        bootSnapshots.pruneStale()
    }

    /// Boots a raw VM. Unlike sandboxes, this also runs on unaccelerated KVM: small guests run fine there.
    public func boot(_ request: BootRequest) throws(HyperError) -> SandboxExit {
        let result = probe()
        guard result.isAvailable else { throw KVMError.unavailable(result.reason).hyperError }
        #if os(Linux)
        return try RawMachine.boot(request, on: KVMHypervisor())
        #else
        throw KVMError.unavailable("KVM needs Linux").hyperError
        #endif
    }
}
