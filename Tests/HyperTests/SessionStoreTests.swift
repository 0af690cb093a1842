import Foundation
import Testing
@testable import Hyper

@Suite("Session store and records")
struct SessionStoreTests {
    @Test(arguments: ["a", "work-1", "A.b_c", String(repeating: "x", count: 63)])
    func goodNames(name: String) throws {
        try SessionStore.validateName(name)
    }

    @Test(arguments: ["", "-x", ".hidden", "_x", "a/b", "..", "a b", "ü", String(repeating: "x", count: 64)])
    func badNamesAreRefused(name: String) {
        #expect(throws: HyperError.self) { try SessionStore.validateName(name) }
    }

    @Test func aRecordRoundTripsAndAGoneSupervisorIsNotAlive() throws {
        let directory = NSTemporaryDirectory() + "hyperctl-store-\(UUID().uuidString)"
        let store = SessionStore(directory: directory)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try store.reserve("one")
        #expect(throws: HyperError.self) { try store.reserve("one") }
        let pid = HostSystem.processID
        var record = SessionRecord(name: "one", backend: "process", state: .running, supervisorPid: pid,
                                   supervisorStartTicks: HostSystem.processStartTicks(pid) ?? 0, createdSeconds: 1_700_000_000, workspace: "/w")
        try store.write(record)
        #expect(store.record("one") == record)
        #expect(record.supervisorIsAlive)
        record.supervisorStartTicks += 1  // The same pid, another process: not ours.
        #expect(!record.supervisorIsAlive)
        #expect(store.names() == ["one"])
        let mode = try FileManager.default.attributesOfItem(atPath: directory)[.posixPermissions] as? Int
        #expect(mode == 0o700)
        store.remove("one")
        #expect(store.names().isEmpty)
    }

    @Test func theSpecDocumentDecodesToTheSameSpec() throws {
        var spec = SandboxSpec()
        spec.command = ["make", "test"]
        spec.environment = [EnvironmentVariable(name: "A", value: "1 2"), EnvironmentVariable(name: "B", value: "")]
        spec.workingDirectory = "/src/sub"
        spec.workspace = "/src"
        spec.mounts = [Mount(source: "/data", destination: "/data", readOnly: true)]
        spec.network = .allow([NetworkDestination(host: "*.example.org", port: 443), NetworkDestination(host: "::1", port: 8080)])
        spec.secrets = [Secret(name: "T", source: .environment("V"), injectedInto: [NetworkDestination(host: "api.example.org")]),
                        Secret(name: "K", source: .file("/keys/k"))]
        spec.limits = ResourceLimits()
        spec.limits.memoryBytes = 512 << 20
        spec.limits.cpus = 1.5
        spec.limits.pids = 64
        spec.limits.timeout = .milliseconds(2500)
        spec.tty = true
        spec.rootfs = "/roots/debian"
        spec.protectsHostExecutedFiles = false
        let decoded = try SandboxSpec.decode(json: spec.document.compactText, baseDirectory: "/")
        #expect(decoded == spec)
    }

    @Test func execRequestsAreChecked() throws {
        let good = try JSONValue.parse(#"{"request":"exec","command":["sh","-c","true"],"env":["A=1"],"workdir":"/w","tty":true}"#)
        let command = try SessionSupervisor.command(from: good)
        #expect(command == SessionCommand(arguments: ["sh", "-c", "true"], environment: [EnvironmentVariable(name: "A", value: "1")],
                                          workingDirectory: "/w", tty: true))
        for bad in [#"{"request":"exec"}"#, #"{"request":"exec","command":[]}"#, #"{"request":"exec","command":["x"],"env":["NOVALUE"]}"#,
                    #"{"request":"exec","command":["x"],"workdir":"relative"}"#] {
            #expect(throws: HyperError.self, "\(bad)") { try SessionSupervisor.command(from: try JSONValue.parse(bad)) }
        }
    }
}
