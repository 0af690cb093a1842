#if canImport(Glibc)
import Glibc
#endif
import Hyper
import Testing
@testable import HyperFake

/// A pipe for capturing what a sandbox writes.
struct CapturePipe: ~Copyable {
    let readEnd: Int32
    let writeEnd: Int32

    init() {
        var ends: [Int32] = [0, 0]
        // SAFETY: pipe writes two descriptors into the two-element array.
        _ = unsafe pipe(&ends)
        readEnd = ends[0]
        writeEnd = ends[1]
    }

    /// Closes the write end and returns everything written.
    consuming func finish() -> String {
        close(writeEnd)
        var collected: [UInt8] = []
        while let chunk = try? HostSystem.readSome(readEnd), !chunk.isEmpty { collected += chunk }
        close(readEnd)
        return String(decoding: collected, as: UTF8.self)
    }
}

/// Runs `command` on the fake backend and returns the status, stdout, stderr and report text.
func runFake(_ command: [String], seed: UInt64 = 7, faults: [PhaseFault] = [], configure: (inout SandboxSpec) -> Void = { _ in })
    throws(HyperError) -> (status: SandboxExit, output: String, errorOutput: String, report: String)
{
    var spec = SandboxSpec()
    spec.command = command
    spec.workspace = "/tmp"
    configure(&spec)
    let output = CapturePipe()
    let errorOutput = CapturePipe()
    var options = LaunchOptions()
    options.seed = seed
    options.faults = faults
    options.streams = StandardStreams(input: 0, output: output.writeEnd, error: errorOutput.writeEnd)
    let backend = FakeBackend()
    let handle: any SandboxHandle
    let status: SandboxExit
    do throws(HyperError) {
        handle = try backend.launch(spec, options: options)
        status = try handle.wait()
    } catch {
        _ = output.finish()
        _ = errorOutput.finish()
        throw error
    }
    let report = SandboxReport(backend: backend.name, spec: spec, timeline: handle.timeline, status: status).text
    return (status, output.finish(), errorOutput.finish(), report)
}

@Suite("Fake backend")
struct FakeBackendTests {
    @Test func echoTrueFalseExit() throws {
        #expect(try runFake(["echo", "hello", "world"]).output == "hello world\n")
        #expect(try runFake(["echo", "-n", "x"]).output == "x")
        #expect(try runFake(["true"]).status == .exited(0))
        #expect(try runFake(["false"]).status == .exited(1))
        #expect(try runFake(["exit", "3"]).status == .exited(3))
        let bad = try runFake(["exit", "300"])
        #expect(bad.status == .exited(2) && bad.errorOutput.contains("numeric argument required"))
        let unknown = try runFake(["gcc"])
        #expect(unknown.status == .exited(127) && unknown.errorOutput.contains("gcc: command not found"))
    }

    @Test func sameSeedGivesByteIdenticalReports() throws {
        let first = try runFake(["echo", "hello"], seed: 7)
        let second = try runFake(["echo", "hello"], seed: 7)
        let other = try runFake(["echo", "hello"], seed: 8)
        #expect(first.report == second.report)
        #expect(first.report != other.report)
    }

    @Test func timelineIsOrderedAndComplete() throws {
        var spec = SandboxSpec()
        spec.command = ["true"]
        spec.workspace = "/tmp"
        let handle = try FakeBackend().launch(spec, options: LaunchOptions())
        #expect(try handle.wait() == .exited(0))
        #expect(handle.timeline.map(\.phase) == SandboxPhase.allCases)
        #expect(zip(handle.timeline, handle.timeline.dropFirst()).allSatisfy { $0.nanoseconds < $1.nanoseconds })
        #expect(try handle.wait() == .exited(0), "waiting again returns the same status")
    }

    @Test func sleepRunsOnTheVirtualClockAndTimesOut() throws {
        let started = HostSystem.monotonicNanoseconds()
        let slept = try runFake(["sleep", "1h"])
        #expect(slept.status == .exited(0))
        #expect(HostSystem.monotonicNanoseconds() - started < 5_000_000_000, "a virtual hour takes no real hour")
        #expect(slept.report.contains("\"ns\": 36"))
        let limited = try runFake(["sleep", "10s"]) { $0.limits.timeout = .seconds(2) }
        #expect(limited.status == .timedOut)
    }

    @Test(arguments: SandboxPhase.allCases)
    func injectedFailureNamesThePhase(phase: SandboxPhase) {
        do {
            _ = try runFake(["true"], faults: [PhaseFault(phase: phase, kind: .fail)])
            Issue.record("the fault did not fail the run")
        } catch {
            #expect(error.code == .phaseFailed)
            #expect(error.message.contains("phase \(phase.flagName)"))
        }
    }

    @Test func injectedHangEndsAtTheTimeoutOrIsRefused() throws {
        let hung = try runFake(["true"], faults: [PhaseFault(phase: .booted, kind: .hang)]) { $0.limits.timeout = .seconds(5) }
        #expect(hung.status == .timedOut)
        #expect(!hung.report.contains("\"booted\""))
        #expect(throws: HyperError.self) { try runFake(["true"], faults: [PhaseFault(phase: .agentReady, kind: .hang)]) }
    }

    @Test func catReadsOnlyThroughTheWorkspaceAndMounts() throws {
        let directory = "/tmp/hyperctl-fake-test-\(getpid())"
        mkdir(directory, 0o755)
        defer {
            HostSystem.removeQuietly(directory + "/note.txt")
            rmdir(directory)
        }
        try HostSystem.writeFile(directory + "/note.txt", Array("from the workspace\n".utf8))
        let inWorkspace = try runFake(["cat", "note.txt"]) { $0.workspace = directory }
        #expect(inWorkspace.output == "from the workspace\n")
        let throughMount = try runFake(["cat", "/data/note.txt"]) {
            $0.mounts = [Mount(source: directory, destination: "/data", readOnly: true)]
        }
        #expect(throughMount.output == "from the workspace\n")
        let outside = try runFake(["cat", "/etc/hostname"])
        #expect(outside.status == .exited(1) && outside.errorOutput.contains("No such file"))
        let escape = try runFake(["cat", "../etc/hostname"]) { $0.workspace = directory }
        #expect(escape.status == .exited(1))
    }

    @Test func signalBeforeStartEndsWithThatSignal() throws {
        var spec = SandboxSpec()
        spec.command = ["sleep", "5"]
        spec.workspace = "/tmp"
        let handle = try FakeBackend().launch(spec, options: LaunchOptions())
        try handle.kill()
        #expect(try handle.wait() == .signaled(9))
        #expect(try handle.wait().exitCode == 137)
        #expect(throws: HyperError.self) { try handle.signal(0) }
    }

    @Test func refusesFeaturesItDoesNotEnforce() {
        do {
            _ = try runFake(["true"]) { $0.network = .allow([NetworkDestination(host: "example.org")]) }
            Issue.record("an allowlist was accepted")
        } catch {
            #expect(error.code == .unsupportedFeature)
            #expect(error.message.contains("network allowlist"))
        }
    }

    @Test func isNeverUsableAutomatically() {
        let backend = FakeBackend()
        #expect(backend.isolation == .simulated)
        #expect(backend.probe().isAvailable)
    }
}
