import Hyper

/// The cgroup directories and files that enforce a sandbox's limits, for the host's cgroup layout.
///
/// The helper creates the directories, writes the limits, moves the sandbox in, and at the end kills what is
/// left (v2 `cgroup.kill`) and removes the directories it created for this sandbox.
public struct CgroupPlan: Equatable, Sendable {
    /// Shared parent directories to create if missing; they are never removed.
    public var sharedDirectories: [String] = []
    /// This sandbox's own directories, created after the shared ones and removed at the end.
    public var directories: [String] = []
    /// Limit files and values, written after the directories exist.
    public var writes: [Write] = []
    /// `cgroup.procs` files the sandbox's first process is written to.
    public var procsFiles: [String] = []
    /// `cgroup.kill` files written to kill everything at the end (v2 only).
    public var killFiles: [String] = []
    /// Limits no controller here can enforce, for the rlimit fallback.
    public var unenforced: Set<SandboxFeature> = []

    /// One limit file and the value written to it.
    public struct Write: Equatable, Sendable {
        public var path: String
        public var value: String
    }

    /// Creates an empty plan.
    public init() {}

    /// Returns the plan for `limits` under the layout in `facts`.
    ///
    /// - Parameters:
    ///   - name: a name unique to this sandbox (`sandbox-PID-N`).
    ///   - root: the cgroup mount (`/sys/fs/cgroup`).
    public static func make(limits: ResourceLimits, facts: ProcessHostFacts, name: String, root: String = "/sys/fs/cgroup") -> CgroupPlan {
        var plan = CgroupPlan()
        var wanted: [(controller: String, feature: SandboxFeature)] = []
        if limits.memoryBytes != nil { wanted.append(("memory", .memoryLimit)) }
        if limits.pids != nil { wanted.append(("pids", .pidsLimit)) }
        if limits.cpus != nil { wanted.append(("cpu", .cpuLimit)) }
        let usable = facts.isRoot ? wanted.filter { facts.limitControllers.contains($0.controller) } : []
        plan.unenforced = Set(wanted.filter { want in !usable.contains { $0.controller == want.controller } }.map(\.feature))
        guard !usable.isEmpty else { return plan }
        let quota = limits.cpus.map { String(max(1000, Int(($0 * 100_000).rounded()))) }
        switch facts.cgroupLayout {
        case .unified:
            let parent = root + "/hyperctl"
            let leaf = parent + "/" + name
            let enable = usable.map { "+" + $0.controller }.joined(separator: " ")
            plan.writes.append(Write(path: root + "/cgroup.subtree_control", value: enable))
            plan.sharedDirectories = [parent]
            plan.directories = [leaf]
            plan.writes.insert(Write(path: parent + "/cgroup.subtree_control", value: enable), at: 1)
            if let memory = limits.memoryBytes, usable.contains(where: { $0.controller == "memory" }) {
                plan.writes.append(Write(path: leaf + "/memory.max", value: String(memory)))
                plan.writes.append(Write(path: leaf + "/memory.swap.max", value: "0"))
                plan.writes.append(Write(path: leaf + "/memory.oom.group", value: "1"))
            }
            if let pids = limits.pids, usable.contains(where: { $0.controller == "pids" }) {
                plan.writes.append(Write(path: leaf + "/pids.max", value: String(pids)))
            }
            if let quota, usable.contains(where: { $0.controller == "cpu" }) {
                plan.writes.append(Write(path: leaf + "/cpu.max", value: "\(quota) 100000"))
            }
            plan.procsFiles = [leaf + "/cgroup.procs"]
            plan.killFiles = [leaf + "/cgroup.kill"]
        case .legacy:
            for (controller, _) in usable {
                let directory = "\(root)/\(controller)/hyperctl-\(name)"
                plan.directories.append(directory)
                switch controller {
                case "memory":
                    if let memory = limits.memoryBytes {
                        plan.writes.append(Write(path: directory + "/memory.limit_in_bytes", value: String(memory)))
                        if facts.hasMemorySwapAccounting {
                            plan.writes.append(Write(path: directory + "/memory.memsw.limit_in_bytes", value: String(memory)))
                        }
                    }
                case "pids":
                    if let pids = limits.pids { plan.writes.append(Write(path: directory + "/pids.max", value: String(pids))) }
                case "cpu":
                    if let quota {
                        plan.writes.append(Write(path: directory + "/cpu.cfs_period_us", value: "100000"))
                        plan.writes.append(Write(path: directory + "/cpu.cfs_quota_us", value: quota))
                    }
                default:
                    break
                }
                plan.procsFiles.append(directory + "/cgroup.procs")
            }
        case .absent:
            plan.unenforced = Set(wanted.map(\.feature))
        }
        return plan
    }
}
