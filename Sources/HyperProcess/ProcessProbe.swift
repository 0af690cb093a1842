import Hyper

/// How the host's cgroup file system is laid out, which decides how limits are enforced.
public enum CgroupLayout: String, Sendable, Equatable {
    /// The unified hierarchy at /sys/fs/cgroup (most current distributions).
    case unified = "v2"
    /// v1 controllers under /sys/fs/cgroup/<controller>, with or without a cgroup2 tree at /sys/fs/cgroup/unified.
    case legacy = "v1"
    /// No cgroup file system was found; limits fall back to rlimits.
    case absent = "none"
}

/// The facts about this host that decide whether the namespace sandbox can run.
public struct ProcessHostFacts: Equatable, Sendable {
    /// `/proc/sys/user/max_user_namespaces`, when readable.
    public var maxUserNamespaces: Int?
    /// `/proc/sys/kernel/unprivileged_userns_clone` (Debian's switch), when present.
    public var unprivilegedUserNamespaceClone: Int?
    /// Whether hyperctl runs as root.
    public var isRoot = false
    /// The cgroup layout.
    public var cgroupLayout = CgroupLayout.absent
    /// Whether the unified hierarchy has the memory and pids controllers enabled (v2), or v1 has them mounted.
    public var limitControllers: [String] = []
    /// Whether v1 memory cgroups account swap (`memory.memsw.limit_in_bytes` exists).
    public var hasMemorySwapAccounting = false
    /// Whether the kernel offers seccomp filters.
    public var hasSeccompFilter = false

    /// Creates empty facts.
    public init() {}

    /// Reads the facts from this host.
    public static func gather() -> ProcessHostFacts {
        var facts = ProcessHostFacts()
        facts.maxUserNamespaces = HostSystem.readText("/proc/sys/user/max_user_namespaces").flatMap { Int($0.trimmingNewlines()) }
        facts.unprivilegedUserNamespaceClone = HostSystem.readText("/proc/sys/kernel/unprivileged_userns_clone").flatMap { Int($0.trimmingNewlines()) }
        facts.isRoot = HostSystem.isRoot
        if let controllers = HostSystem.readText("/sys/fs/cgroup/cgroup.controllers") {
            facts.cgroupLayout = .unified
            facts.limitControllers = controllers.trimmingNewlines().split(separator: " ").map(String.init)
                .filter { ["memory", "pids", "cpu"].contains($0) }
        } else if HostSystem.fileKind(at: "/sys/fs/cgroup/memory") == .directory {
            facts.cgroupLayout = .legacy
            facts.limitControllers = ["memory", "pids", "cpu"].filter { HostSystem.fileKind(at: "/sys/fs/cgroup/\($0)") == .directory }
            facts.hasMemorySwapAccounting = HostSystem.fileKind(at: "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes") != nil
        }
        facts.hasSeccompFilter = HostSystem.readText("/proc/sys/kernel/seccomp/actions_avail")?.contains("kill_process") ?? false
        return facts
    }
}

/// Judges `ProcessHostFacts`.
public enum ProcessProbe {
    /// Returns the verdict for these facts.
    public static func evaluate(_ facts: ProcessHostFacts) -> ProbeResult {
        var problems: [String] = []
        if let limit = facts.maxUserNamespaces, limit == 0 {
            problems.append("user namespaces are disabled (user.max_user_namespaces = 0)")
        }
        if !facts.isRoot, facts.unprivilegedUserNamespaceClone == 0 {
            problems.append("unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)")
        }
        if !facts.hasSeccompFilter {
            problems.append("the kernel has no seccomp filter support")
        }
        guard problems.isEmpty else { return ProbeResult(isAvailable: false, reasons: problems) }
        var reasons = ["user namespaces", "seccomp-bpf"]
        switch facts.cgroupLayout {
        case .unified, .legacy:
            let controllers = facts.limitControllers.isEmpty ? "no limit controllers" : facts.limitControllers.joined(separator: ", ")
            reasons.append("cgroup \(facts.cgroupLayout.rawValue) (\(controllers))")
        case .absent:
            reasons.append("no cgroups: limits fall back to rlimits")
        }
        return ProbeResult(isAvailable: true, reasons: reasons)
    }
}

extension String {
    func trimmingNewlines() -> String {
        var text = Substring(self)
        while let last = text.last, last == "\n" || last == " " { text = text.dropLast() }
        return String(text)
    }
}
