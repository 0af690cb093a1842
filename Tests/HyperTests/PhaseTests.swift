import Testing
@testable import Hyper

@Suite("Phases, exit status and faults")
struct PhaseTests {
    @Test func exitCodesFollowDockerConventions() {
        #expect(SandboxExit.exited(42).exitCode == 42)
        #expect(SandboxExit.signaled(9).exitCode == 137)
        #expect(SandboxExit.timedOut.exitCode == 124)
    }

    @Test(arguments: [
        ("boot", SandboxPhase.booted), ("booted", .booted), ("agent-ready", .agentReady), ("agentReady", .agentReady),
        ("start", .commandStarted), ("command-started", .commandStarted), ("exit", .exited), ("create", .created),
    ])
    func phaseNames(text: String, phase: SandboxPhase) {
        #expect(SandboxPhase.named(text) == phase)
    }

    @Test func faultsParse() throws {
        #expect(try PhaseFault.parse("boot") == PhaseFault(phase: .booted, kind: .fail))
        #expect(try PhaseFault.parse("agent-ready:hang") == PhaseFault(phase: .agentReady, kind: .hang))
        #expect(errorMessage { () throws(HyperError) in try PhaseFault.parse("reboot") }?.contains("unknown phase") == true)
        #expect(errorMessage { () throws(HyperError) in try PhaseFault.parse("boot:explode") }?.contains("unknown kind") == true)
    }
}
