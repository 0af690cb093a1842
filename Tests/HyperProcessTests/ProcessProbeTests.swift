import Hyper
import Testing
@testable import HyperProcess

@Suite("Process backend probe")
struct ProcessProbeTests {
    func facts(_ change: (inout ProcessHostFacts) -> Void = { _ in }) -> ProcessHostFacts {
        var facts = ProcessHostFacts()
        facts.maxUserNamespaces = 1000
        facts.isRoot = true
        facts.cgroupLayout = .unified
        facts.limitControllers = ["memory", "pids"]
        facts.hasSeccompFilter = true
        change(&facts)
        return facts
    }

    @Test func availableWithNamespacesAndSeccomp() {
        let result = ProcessProbe.evaluate(facts())
        #expect(result.isAvailable)
        #expect(result.isAccelerated == nil)
        #expect(result.reason.contains("cgroup v2 (memory, pids)"))
    }

    @Test func unavailableWithoutUserNamespaces() {
        let result = ProcessProbe.evaluate(facts { $0.maxUserNamespaces = 0 })
        #expect(!result.isAvailable)
        #expect(result.reason.contains("user namespaces are disabled"))
    }

    @Test func debianSwitchMattersOnlyForUnprivilegedUsers() {
        #expect(ProcessProbe.evaluate(facts { $0.unprivilegedUserNamespaceClone = 0 }).isAvailable)
        let user = ProcessProbe.evaluate(facts { $0.unprivilegedUserNamespaceClone = 0; $0.isRoot = false })
        #expect(!user.isAvailable && user.reason.contains("unprivileged_userns_clone"))
    }

    @Test func unavailableWithoutSeccomp() {
        #expect(!ProcessProbe.evaluate(facts { $0.hasSeccompFilter = false }).isAvailable)
    }

    @Test func noCgroupsFallsBackToRlimits() {
        let result = ProcessProbe.evaluate(facts { $0.cgroupLayout = .absent; $0.limitControllers = [] })
        #expect(result.isAvailable && result.reason.contains("rlimits"))
    }

    @Test func gatheredFactsDescribeThisHost() {
        let facts = ProcessHostFacts.gather()
        #expect(facts.maxUserNamespaces != nil)
        #expect(facts.cgroupLayout != .absent || HostSystem.fileKind(at: "/sys/fs/cgroup") == nil)
    }
}
