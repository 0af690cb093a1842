#if canImport(Glibc)
import Glibc
#endif
import Hyper
import Testing
@testable import HyperKVM

/// Facts of a host whose /dev/kvm works, changed by `change`.
func kvmFacts(_ change: (inout KVMHostFacts) -> Void = { _ in }) -> KVMHostFacts {
    var facts = KVMHostFacts()
    facts.deviceExists = true
    facts.apiVersion = 12
    facts.extensions = Set(KVMExtension.allCases)
    facts.hardwareVirtualizationFlag = "vmx"
    change(&facts)
    return facts
}

/// Whether this process can open /dev/kvm for reading and writing.
let kvmDeviceUsable = access("/dev/kvm", R_OK | W_OK) == 0

@Suite("KVM probe")
struct KVMProbeTests {
    @Test func hardwareHostIsAccelerated() {
        let result = KVMProbe.evaluate(kvmFacts())
        #expect(result.isAvailable && result.isAccelerated == true)
        #expect(result.reasons.first == "hardware-accelerated (vmx)")
        #expect(result.isUsableAutomatically)
    }

    @Test func softwareProviderIsPresentButNotAccelerated() {
        let result = KVMProbe.evaluate(kvmFacts { $0.hardwareVirtualizationFlag = nil; $0.softwareProvider = "kvm_pvm" })
        #expect(result.isAvailable && result.isAccelerated == false)
        #expect(result.reason.hasPrefix("present, not hardware-accelerated: /dev/kvm is served by kvm_pvm"))
        #expect(result.reason.contains("no vmx or svm flag"))
        #expect(!result.isUsableAutomatically)
    }

    @Test func missingFlagAloneMeansNotAccelerated() {
        let result = KVMProbe.evaluate(kvmFacts { $0.hardwareVirtualizationFlag = nil })
        #expect(result.isAvailable && result.isAccelerated == false)
    }

    @Test func unavailableCases() {
        #expect(KVMProbe.evaluate(kvmFacts { $0.deviceExists = false }).reason.contains("does not exist"))
        let denied = KVMProbe.evaluate(kvmFacts { $0.openErrorNumber = EACCES })
        #expect(!denied.isAvailable && denied.reason.contains("Permission denied"))
        #expect(KVMProbe.evaluate(kvmFacts { $0.apiVersion = 11 }).reason.contains("API version 11"))
        #expect(!KVMProbe.evaluate(kvmFacts { $0.extensions = [] }).isAvailable)
    }

    @Test func cpuinfoFlagsAreFoundOnTheFlagsLine() {
        #expect(KVMHostFacts.hardwareFlag(inCPUInfo: "processor\t: 0\nflags\t\t: fpu vme svm lm\n") == "svm")
        #expect(KVMHostFacts.hardwareFlag(inCPUInfo: "flags\t\t: fpu hypervisor lm\nbugs: vmx\n") == nil)
    }

    @Test func refusesUnacceleratedLaunchUnlessAllowed() {
        let backend = KVMBackend { kvmFacts { $0.hardwareVirtualizationFlag = nil; $0.softwareProvider = "kvm_pvm" } }
        var spec = SandboxSpec()
        spec.command = ["true"]
        spec.workspace = "/tmp"
        do {
            _ = try backend.launch(spec, options: LaunchOptions())
            Issue.record("an unaccelerated launch was accepted")
        } catch {
            #expect(error.code == .backendUnavailable)
            #expect(error.message.contains("not hardware-accelerated") && error.message.contains("--allow-unaccelerated"))
        }
    }

    @Test(.enabled(if: kvmDeviceUsable, "needs read-write access to /dev/kvm"))
    func realDeviceReportsAPI12() throws {
        let device = try KVMDevice()
        #expect(try device.apiVersion() == 12)
        #expect(device.checkExtension(KVMExtension.userMemory.capability) > 0)
        let facts = KVMHostFacts.gather()
        let result = KVMProbe.evaluate(facts)
        #expect(result.isAvailable)
        #expect(result.isAccelerated == (facts.hardwareVirtualizationFlag != nil && facts.softwareProvider == nil))
    }

    @Test func missingDeviceFailsToOpenWithErrno() {
        #expect(throws: KVMError.systemCall(operation: "open /no/such/kvm", errorNumber: ENOENT)) {
            _ = try KVMDevice(path: "/no/such/kvm")
        }
    }
}
