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

    /// Creates the backend. Tests pass their own facts to check probe verdicts and selection.
    public init(facts: @escaping @Sendable () -> KVMHostFacts = { KVMHostFacts.gather() }) {
        gatherFacts = facts
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
        let (spec, origin) = try origin(of: spec, options: options)
        let bootTimeout = try prepare(spec, options: options)
        #if os(Linux)
        let signals = try HostSignalRelay()
        return try MicroVMSandbox(spec: spec, options: options, origin: origin, hypervisor: KVMHypervisor(), signals: signals,
                                  bootTimeout: bootTimeout)
        #else
        throw KVMError.unavailable("KVM needs Linux").hyperError
        #endif
    }

    /// A microVM that stays up for many commands; its time limit is the sandbox's life.
    public func launchSession(_ spec: SandboxSpec, options: LaunchOptions) throws(HyperError) -> any SessionSandbox {
        var (sessionSpec, origin) = try origin(of: spec, options: options)
        sessionSpec.interactive = false
        sessionSpec.tty = false
        let bootTimeout = try prepare(sessionSpec, options: options)
        #if os(Linux)
        return try MicroVMSession(spec: sessionSpec, options: options, origin: origin, hypervisor: KVMHypervisor(), bootTimeout: bootTimeout)
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

    /// Where the machine comes from: the options' snapshot (whose size and flavour the spec takes where it
    /// sets none), or the guest kit.
    func origin(of spec: SandboxSpec, options: LaunchOptions) throws(HyperError) -> (SandboxSpec, MicroVMSandbox.Origin) {
        guard let folder = options.snapshotPath else { return (spec, .boot(try kit(for: options))) }
        let snapshot = try SandboxSnapshot.read(from: folder)
        var restored = spec
        if restored.limits.memoryBytes == nil { restored.limits.memoryBytes = snapshot.memoryBytes }
        if restored.limits.cpus == nil { restored.limits.cpus = Double(snapshot.vcpus) }
        if snapshot.isDocker { restored.docker = true }
        return (restored, .snapshot(snapshot))
    }

    /// The guest kit, with the options' kernel or initrd in place of its own.
    func kit(for options: LaunchOptions) throws(HyperError) -> GuestKit {
        switch (options.kernelPath, options.initrdPath) {
        case let (kernel?, initrd?): return GuestKit(kernelPath: kernel, initrdPath: initrd)
        case (nil, nil): return try GuestKit.locate()
        case let (kernel, initrd):
            let base = try GuestKit.locate()
            return GuestKit(kernelPath: kernel ?? base.kernelPath, initrdPath: initrd ?? base.initrdPath)
        }
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
