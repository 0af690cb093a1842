import Foundation
import Hyper
import Testing
@testable import HyperProcess

@Suite("Jail planning")
struct PlannerTests {
    func spec(_ change: (inout SandboxSpec) -> Void = { _ in }) -> SandboxSpec {
        var spec = SandboxSpec()
        spec.command = ["make", "test"]
        spec.workspace = "/tmp"
        spec.environment = [EnvironmentVariable(name: "CI", value: "1")]
        change(&spec)
        return spec
    }

    func rootFacts(_ layout: CgroupLayout = .legacy, controllers: [String] = ["memory", "pids", "cpu"]) -> ProcessHostFacts {
        var facts = ProcessHostFacts()
        facts.isRoot = true
        facts.cgroupLayout = layout
        facts.limitControllers = controllers
        facts.hasSeccompFilter = true
        return facts
    }

    @Test func synthesizedEtcHasNoSecrets() {
        let config = JailPlanner().plan(spec(), facts: rootFacts(), sandboxName: "s")
        let paths = config.files.map(\.path)
        #expect(paths.contains("/etc/passwd") && paths.contains("/etc/group") && paths.contains("/etc/hosts"))
        #expect(!paths.contains("/etc/shadow") && !paths.contains("/etc/sudoers"))
        #expect(!config.binds.contains { $0.source.hasPrefix("/etc/") && !JailPlanner.etcEntries.contains(String($0.source.dropFirst(5))) })
        #expect(config.binds.contains { $0.source == "/usr" && $0.readOnly && !$0.idmapped })
        #expect(config.binds.contains { $0.source == "/tmp" && $0.destination == "/tmp" && !$0.readOnly && $0.idmapped })
        #expect(config.environment == ["CI=1"])
        #expect(config.workingDirectory == "/tmp")
    }

    @Test func defaultProcessCapIsAnRlimit() {
        let config = JailPlanner().plan(spec(), facts: rootFacts(), sandboxName: "s")
        #expect(config.cgroups.directories.isEmpty, "no cgroup unless a limit is asked for")
        #expect(config.resourceLimits.contains { $0.resource == 6 && $0.value == UInt64(JailPlanner.defaultPidsLimit) })
        #expect(config.resourceLimits.contains { $0.resource == 4 && $0.value == 0 }, "core dumps are off")
    }

    @Test func legacyCgroupsGetOneDirectoryPerController() {
        var limits = ResourceLimits(memoryBytes: 64 << 20, cpus: 1.5, pids: 100)
        limits.timeout = .seconds(3)
        var facts = rootFacts()
        facts.hasMemorySwapAccounting = true
        let plan = CgroupPlan.make(limits: limits, facts: facts, name: "sandbox-1-2")
        #expect(plan.directories == ["memory", "pids", "cpu"].map { "/sys/fs/cgroup/\($0)/hyperctl-sandbox-1-2" })
        #expect(plan.writes.contains(CgroupPlan.Write(path: "/sys/fs/cgroup/memory/hyperctl-sandbox-1-2/memory.limit_in_bytes", value: "67108864")))
        #expect(plan.writes.contains(CgroupPlan.Write(path: "/sys/fs/cgroup/memory/hyperctl-sandbox-1-2/memory.memsw.limit_in_bytes", value: "67108864")))
        #expect(plan.writes.contains(CgroupPlan.Write(path: "/sys/fs/cgroup/pids/hyperctl-sandbox-1-2/pids.max", value: "100")))
        #expect(plan.writes.contains(CgroupPlan.Write(path: "/sys/fs/cgroup/cpu/hyperctl-sandbox-1-2/cpu.cfs_quota_us", value: "150000")))
        #expect(plan.procsFiles.count == 3 && plan.killFiles.isEmpty && plan.unenforced.isEmpty)
    }

    @Test func unifiedCgroupsUseOneLeafWithKill() {
        let plan = CgroupPlan.make(limits: ResourceLimits(memoryBytes: 1 << 30, cpus: 2, pids: 64),
                                   facts: rootFacts(.unified, controllers: ["memory", "pids", "cpu"]), name: "s")
        #expect(plan.sharedDirectories == ["/sys/fs/cgroup/hyperctl"])
        #expect(plan.directories == ["/sys/fs/cgroup/hyperctl/s"])
        #expect(plan.writes.first == CgroupPlan.Write(path: "/sys/fs/cgroup/cgroup.subtree_control", value: "+memory +pids +cpu"))
        #expect(plan.writes.contains(CgroupPlan.Write(path: "/sys/fs/cgroup/hyperctl/s/memory.max", value: "1073741824")))
        #expect(plan.writes.contains(CgroupPlan.Write(path: "/sys/fs/cgroup/hyperctl/s/memory.swap.max", value: "0")))
        #expect(plan.writes.contains(CgroupPlan.Write(path: "/sys/fs/cgroup/hyperctl/s/cpu.max", value: "200000 100000")))
        #expect(plan.killFiles == ["/sys/fs/cgroup/hyperctl/s/cgroup.kill"])
    }

    @Test func withoutCgroupsLimitsFallBackToRlimits() {
        var facts = rootFacts(.absent, controllers: [])
        facts.isRoot = false
        let config = JailPlanner().plan(spec { $0.limits = ResourceLimits(memoryBytes: 256 << 20, pids: 50) }, facts: facts, sandboxName: "s")
        #expect(config.cgroups.unenforced == [.memoryLimit, .pidsLimit])
        #expect(config.resourceLimits.contains { $0.resource == 9 && $0.value == 256 << 20 })
        #expect(config.resourceLimits.contains { $0.resource == 6 && $0.value == 50 })
    }

    @Test func configurationRecordsRoundTripTheirLengths() {
        let bytes = JailPlanner().plan(spec(), facts: rootFacts(), sandboxName: "s").encoded()
        var offset = 0
        var tags: [UInt32] = []
        while offset + 8 <= bytes.count {
            func word(_ at: Int) -> UInt32 { (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) } }
            tags.append(word(offset))
            offset += 8 + Int(word(offset + 4))
        }
        #expect(offset == bytes.count)
        #expect(tags.first == JailConfig.Tag.argument.rawValue)
        #expect(tags.contains(JailConfig.Tag.seccomp.rawValue))
    }
}
