/// How strongly a backend separates the sandbox from the host. Higher is stronger.
public enum IsolationLevel: Int, Sendable, Comparable, CaseIterable {
    /// Nothing runs; the sandbox is a simulation (for tests and contributors).
    case simulated = 0
    /// Linux namespaces, seccomp and cgroups around a host process.
    case namespaces = 1
    /// A hardware virtual machine with its own kernel.
    case hardwareVM = 2

    public static func < (lhs: IsolationLevel, rhs: IsolationLevel) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The level's name as `hyperctl backends` prints it.
    public var name: String {
        switch self {
        case .simulated: return "simulated"
        case .namespaces: return "namespaces"
        case .hardwareVM: return "hardware-vm"
        }
    }
}

/// A feature of the spec (or of the launch) that a backend may or may not enforce.
public enum SandboxFeature: String, Sendable, CaseIterable, Comparable {
    case mounts
    case readOnlyMounts = "read-only mounts"
    case networkAllowlist = "network allowlist"
    case secrets
    case memoryLimit = "memory limit"
    case cpuLimit = "cpu limit"
    case pidsLimit = "pids limit"
    case timeout
    case interactive = "interactive stdin"
    case tty
    case customRoot = "custom root tree"
    case docker = "docker daemon"
    case faultInjection = "fault injection"

    public static func < (lhs: SandboxFeature, rhs: SandboxFeature) -> Bool {
        (allCases.firstIndex(of: lhs) ?? 0) < (allCases.firstIndex(of: rhs) ?? 0)
    }
}

extension SandboxSpec {
    /// The features a backend must enforce to run this spec as asked.
    public var requiredFeatures: Set<SandboxFeature> {
        var features: Set<SandboxFeature> = []
        if !mounts.isEmpty { features.insert(.mounts) }
        if mounts.contains(where: \.readOnly) { features.insert(.readOnlyMounts) }
        if case .allow = network { features.insert(.networkAllowlist) }
        if !secrets.isEmpty { features.insert(.secrets) }
        if limits.memoryBytes != nil { features.insert(.memoryLimit) }
        if limits.cpus != nil { features.insert(.cpuLimit) }
        if limits.pids != nil { features.insert(.pidsLimit) }
        if limits.timeout != nil { features.insert(.timeout) }
        if interactive { features.insert(.interactive) }
        if tty { features.insert(.tty) }
        if rootfs != nil { features.insert(.customRoot) }
        if docker { features.insert(.docker) }
        return features
    }
}

/// What a backend's host probe found: whether it can run here, and why (or why not).
public struct ProbeResult: Equatable, Sendable {
    /// Whether the backend can launch sandboxes on this host.
    public var isAvailable: Bool
    /// For hardware-VM backends: whether the accelerator uses hardware virtualization. Nil for other backends.
    public var isAccelerated: Bool?
    /// Short facts that justify the verdict, most important first.
    public var reasons: [String]

    /// Creates a result.
    public init(isAvailable: Bool, isAccelerated: Bool? = nil, reasons: [String]) {
        self.isAvailable = isAvailable
        self.isAccelerated = isAccelerated
        self.reasons = reasons
    }

    /// The reasons as one line.
    public var reason: String { reasons.joined(separator: "; ") }

    /// Whether `auto` may pick the backend: available, and accelerated when that question applies.
    public var isUsableAutomatically: Bool { isAvailable && isAccelerated != false }
}

/// A raw VM boot request (`hyperctl boot`): a kernel and its console, without a sandbox around it.
public struct BootRequest: Sendable {
    public var kernelPath: String
    /// The kernel's bytes when they do not come from `kernelPath` (a built-in guest).
    public var kernelImage: [UInt8]?
    public var initrdPath: String?
    public var commandLine: String
    public var memoryBytes: UInt64
    public var cpus: Int
    public var timeout: Duration?
    /// Where the guest's serial console goes.
    public var consoleOutput: Int32

    /// Creates a request with the defaults `hyperctl boot` uses.
    public init(kernelPath: String, initrdPath: String? = nil, commandLine: String = "console=ttyS0",
                memoryBytes: UInt64 = 256 << 20, cpus: Int = 1, timeout: Duration? = nil, consoleOutput: Int32 = 1) {
        self.kernelPath = kernelPath
        self.initrdPath = initrdPath
        self.commandLine = commandLine
        self.memoryBytes = memoryBytes
        self.cpus = cpus
        self.timeout = timeout
        self.consoleOutput = consoleOutput
    }
}

/// A way of running sandboxes: a microVM, a namespace jail, or a simulation.
///
/// Backends register with a `BackendRegistry`; `hyperctl` finds them by name. A backend never runs a spec
/// with weaker isolation than was asked: it refuses features it does not enforce (see `checkSupport`).
public protocol Backend: Sendable {
    /// The name users select it by (`kvm`, `process`, `fake`).
    var name: String { get }
    /// How strongly it isolates.
    var isolation: IsolationLevel { get }
    /// The spec and launch features it enforces.
    var capabilities: Set<SandboxFeature> { get }
    /// Whether `launch` is implemented; `auto` passes over backends that cannot launch sandboxes yet.
    var launchesSandboxes: Bool { get }
    /// Checks the host; cheap enough to run on every `hyperctl` invocation that needs it.
    func probe() -> ProbeResult
    /// Starts a sandbox. The spec has been validated; the backend checks its own capabilities.
    func launch(_ spec: SandboxSpec, options: LaunchOptions) throws(HyperError) -> any SandboxHandle
    /// Boots a raw VM with its console on `request.consoleOutput` and returns how it ended.
    func boot(_ request: BootRequest) throws(HyperError) -> SandboxExit
    /// Starts a long-lived sandbox for many commands (`hyperctl create`). The spec's command is ignored.
    func launchSession(_ spec: SandboxSpec, options: LaunchOptions) throws(HyperError) -> any SessionSandbox
    /// Removes what crashed sandboxes of this backend left behind (cgroups, temporary folders) that belongs
    /// to no live process.
    func sweepLeftovers()
}

extension Backend {
    public var launchesSandboxes: Bool { true }

    /// Backends without sessions say so.
    public func launchSession(_ spec: SandboxSpec, options: LaunchOptions) throws(HyperError) -> any SessionSandbox {
        throw HyperError(.notImplemented, "backend \(name) does not run session sandboxes yet (hyperctl create); use hyperctl run")
    }

    public func sweepLeftovers() {}

    /// Backends without a raw VM say so.
    public func boot(_ request: BootRequest) throws(HyperError) -> SandboxExit {
        throw HyperError(.notImplemented, "boot is not implemented by this backend (\(name))")
    }

    /// Throws `unsupportedFeature` naming every feature that the spec or options need and this backend does not enforce.
    public func checkSupport(_ spec: SandboxSpec, options: LaunchOptions) throws(HyperError) {
        try checkSupport(spec, options: options, capabilities: capabilities)
    }

    /// The same check against capabilities the caller already computed (for backends whose capabilities
    /// depend on host facts).
    public func checkSupport(_ spec: SandboxSpec, options: LaunchOptions, capabilities: Set<SandboxFeature>) throws(HyperError) {
        var required = spec.requiredFeatures
        if !options.faults.isEmpty { required.insert(.faultInjection) }
        let missing = required.subtracting(capabilities).sorted()
        if missing.contains(.docker) {
            throw HyperError(.unsupportedFeature,
                             "backend \(name) cannot run --docker: a private Docker daemon needs a VM boundary (its own kernel), and sharing the host's daemon or socket would undo the isolation; use --backend kvm")
        }
        guard missing.isEmpty else {
            let list = missing.map(\.rawValue).joined(separator: ", ")
            throw HyperError(.unsupportedFeature,
                             "backend \(name) does not enforce: \(list); refusing to run with weaker isolation than asked")
        }
    }
}
