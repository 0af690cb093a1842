import Foundation
import Hyper
import HyperFake
import HyperKVM
import HyperProcess
import Testing
@testable import hyperctl

@Suite("hyperctl run and exit codes")
struct RunCommandTests {
    @Test func echoPrintsAndExitsZero() {
        let result = runInProcess(["run", "--backend", "fake", "--", "echo", "hello"])
        #expect(result.exitCode == 0)
        #expect(result.output == "hello\n")
        #expect(result.errorOutput.isEmpty)
    }

    @Test func commandExitCodePassesThrough() {
        #expect(runInProcess(["run", "--backend", "fake", "--", "exit", "3"]).exitCode == 3)
        #expect(runInProcess(["run", "--backend", "fake", "false"]).exitCode == 1)
        #expect(runInProcess(["run", "--backend", "fake", "nosuchcommand"]).exitCode == 127)
        #expect(runInProcess(["run", "--backend", "fake", "--timeout", "1s", "--", "sleep", "2s"]).exitCode == 124)
    }

    @Test func injectedFaultExits125NamingThePhase() {
        let result = runInProcess(["run", "--backend", "fake", "--fake-fault", "boot", "--", "true"])
        #expect(result.exitCode == 125)
        #expect(result.errorOutput.contains("boot"))
        #expect(result.errorOutput.hasPrefix("hyperctl: "))
    }

    @Test func unknownBackendListsTheKnownOnes() {
        let result = runInProcess(["run", "--backend", "nosuch", "--", "true"])
        #expect(result.exitCode == 125)
        #expect(result.errorOutput.contains("unknown backend \"nosuch\""))
        #expect(result.errorOutput.contains("kvm, process, fake, auto"))
    }

    @Test(arguments: [
        (["run", "--backend", "fake", "--memory", "lots", "--", "true"], "memory: \"lots\" is not a size"),
        (["run", "--backend", "fake", "--timeout", "-1s", "--", "true"], "timeout: \"-1s\" is not a positive duration"),
        (["run", "--backend", "fake", "--workspace", "/no/such/dir", "--", "true"], "workspace: /no/such/dir does not exist"),
        (["run", "--backend", "fake", "--workspace", "/", "--", "true"], "workspace: / is the whole host file system"),
        (["run", "--backend", "fake", "--spec", "/no/such/spec.json", "--", "true"], "spec: cannot read /no/such/spec.json"),
        (["run", "--backend", "fake"], "command: empty"),
        (["run", "--bogus", "--", "true"], "unknown option --bogus"),
        (["run", "--backend"], "--backend needs a value"),
        (["run", "--seed", "x", "--backend", "fake", "true"], "--seed: \"x\" is not a whole number"),
        (["run", "--backend", "fake", "--secret", "T=hunter2", "true"], "literal values are not accepted"),
        (["run", "--backend", "fake", "--net", "allow:example.org", "true"], "backend fake does not enforce: network allowlist"),
        (["run", "--backend", "process", "--fake-fault", "boot", "true"], "does not enforce"),
        (["run", "--backend", "process", "--docker", "--", "docker", "info"], "cannot run --docker: a private Docker daemon needs a VM boundary"),
        (["create", "--backend", "process", "--docker", "--name", "d"], "cannot run --docker: a private Docker daemon needs a VM boundary"),
        (["run", "--backend", "fake", "--docker", "--", "true"], "backend fake cannot run --docker"),
        (["frobnicate"], "unknown command \"frobnicate\""),
        (["snapshot", "vm1"], "snapshot needs --to DIR"),
        (["run", "--backend", "process", "--hostname", "a/b", "--", "true"], "--hostname: sandbox name \"a/b\""),
        (["snapshot", "--to", "/tmp/hyperctl-no-snapshot"], "give one sandbox name"),
        (["snapshot", "no-such-sandbox-here", "--to", "/tmp/hyperctl-no-snapshot"], "no sandbox named no-such-sandbox-here"),
        (["run", "--backend", "process", "--from-snapshot", "/tmp", "--", "true"], "--from-snapshot applies to microVM backends"),
        (["run", "--backend", "kvm", "--from-snapshot", "/tmp", "--kernel", "/tmp", "--", "true"], "--kernel does not go with --from-snapshot"),
        (["run", "--backend", "kvm", "--from-snapshot", "/tmp", "--cold-boot", "--", "true"], "--cold-boot does not go with --from-snapshot"),
        (["run", "--backend", "process", "--cold-boot", "--", "true"], "--cold-boot applies to microVM backends"),
        (["run", "--backend", "kvm", "--allow-unaccelerated", "--from-snapshot", "/no/such/snapshot", "--", "true"], "is not a snapshot folder"),
        (["boot", "--backend", "kvm"], "boot needs --kernel FILE"),
        (["boot", "--kernel", "/no/such/kernel"], "--kernel: /no/such/kernel is not a readable file"),
        (["backends", "extra"], "backends takes no arguments"),
    ])
    func badInputExits125WithAMessage(arguments: [String], message: String) {
        let result = runInProcess(arguments)
        #expect(result.exitCode == 125)
        #expect(result.errorOutput.contains(message), "stderr was: \(result.errorOutput)")
    }

    @Test func bootIsNotImplementedYet() throws {
        let kernel = "/tmp/hyperctl-test-kernel-\(getpid())"
        _ = FileManager.default.createFile(atPath: kernel, contents: Data([0x7F, 0x45, 0x4C, 0x46]))
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let result = runInProcess(["boot", "--backend", "fake", "--kernel", kernel])
        #expect(result.exitCode == 125)
        #expect(result.errorOutput.contains("not implemented by this backend"))
    }

    @Test func specFileLoadsAndFlagsOverrideIt() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let spec = #"{"command": ["echo", "from", "spec"], "limits": {"timeout": "1s"}}"#
        try spec.write(toFile: directory + "/spec.json", atomically: true, encoding: .utf8)
        let fromFile = runInProcess(["run", "--backend", "fake", "--spec", "spec.json"], directory: directory)
        #expect(fromFile.exitCode == 0 && fromFile.output == "from spec\n")
        let overridden = runInProcess(["run", "--backend", "fake", "--spec", "spec.json", "--", "echo", "from", "flags"], directory: directory)
        #expect(overridden.output == "from flags\n")
        try #"{"limits": {"memory": "lots"}}"#.write(toFile: directory + "/bad.json", atomically: true, encoding: .utf8)
        let bad = runInProcess(["run", "--backend", "fake", "--spec", "bad.json", "true"], directory: directory)
        #expect(bad.exitCode == 125 && bad.errorOutput.contains("limits.memory: \"lots\""))
    }

    @Test func reportsAreByteIdenticalForTheSameSeed() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for name in ["a.json", "b.json"] {
            let result = runInProcess(["run", "--backend", "fake", "--seed", "7", "--report", name, "--env", "SECRETISH=hunter2", "--", "echo", "hello"],
                                      directory: directory)
            #expect(result.exitCode == 0)
        }
        let first = try Data(contentsOf: URL(fileURLWithPath: directory + "/a.json"))
        let second = try Data(contentsOf: URL(fileURLWithPath: directory + "/b.json"))
        #expect(first == second)
        let text = String(decoding: first, as: UTF8.self)
        let report = try JSONValue.parse(text)
        #expect(report["backend"] == .string("fake"))
        #expect(report["exit"]?["code"] == .number(0))
        #expect(!text.contains("hunter2"))
        guard case let .array(timeline)? = report["timeline"] else {
            Issue.record("no timeline")
            return
        }
        #expect(timeline.compactMap { $0["phase"] } == SandboxPhase.allCases.map { .string($0.rawValue) })
    }

    @Test func failedRunStillWritesAReport() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let result = runInProcess(["run", "--backend", "fake", "--report", "r.json", "--fake-fault", "agent-ready", "--", "true"], directory: directory)
        #expect(result.exitCode == 125)
        let report = try JSONValue.parse(String(contentsOfFile: directory + "/r.json", encoding: .utf8))
        #expect(report["exit"] == .null)
        #expect(report["error"].map { $0.compactText.contains("agent") } == true)
    }

    @Test func helpExitsZero() {
        #expect(runInProcess(["--help"]).exitCode == 0)
        let help = runInProcess(["run", "--help"])
        #expect(help.exitCode == 0 && help.output.contains("--fake-fault"))
        #expect(runInProcess(["help", "backends"]).output.contains("--json"))
        #expect(runInProcess(["version"]).output == "hyperctl \(HyperRelease.version)\n")
    }

    @Test func commandFlagsAfterTheCommandAreNotParsed() {
        let result = runInProcess(["run", "--backend", "fake", "echo", "--memory", "-v"])
        #expect(result.exitCode == 0 && result.output == "--memory -v\n")
    }
}

/// The kvm backend as it was before it launched sandboxes, to check that `auto` passes over such a backend.
struct KVMThatCannotLaunch: Backend {
    let inner: KVMBackend
    init(facts: @escaping @Sendable () -> KVMHostFacts) { inner = KVMBackend(facts: facts) }
    var name: String { inner.name }
    var isolation: IsolationLevel { inner.isolation }
    var capabilities: Set<SandboxFeature> { inner.capabilities }
    var launchesSandboxes: Bool { false }
    func probe() -> ProbeResult { inner.probe() }
    func launch(_ spec: SandboxSpec, options: LaunchOptions) throws(HyperError) -> any SandboxHandle {
        try inner.launch(spec, options: options)
    }
}

@Suite("Backend selection")
struct BackendSelectionTests {
    func registry(kvm: @escaping @Sendable () -> KVMHostFacts, processAvailable: Bool) -> BackendRegistry {
        BackendRegistry([
            KVMBackend(facts: kvm),
            ProcessBackend {
                var facts = ProcessHostFacts()
                facts.maxUserNamespaces = processAvailable ? 100 : 0
                facts.hasSeccompFilter = true
                facts.isRoot = true
                return facts
            },
            FakeBackend(),
        ])
    }

    static let acceleratedKVM: @Sendable () -> KVMHostFacts = {
        var facts = KVMHostFacts()
        facts.deviceExists = true
        facts.apiVersion = 12
        facts.extensions = Set(KVMExtension.allCases)
        facts.hardwareVirtualizationFlag = "svm"
        return facts
    }

    static let softwareKVM: @Sendable () -> KVMHostFacts = {
        var facts = acceleratedKVM()
        facts.hardwareVirtualizationFlag = nil
        facts.softwareProvider = "kvm_pvm"
        return facts
    }

    @Test func autoPicksAcceleratedKVM() throws {
        // The rule: a hardware VM that works and is accelerated wins...
        let selection = try registry(kvm: Self.acceleratedKVM, processAvailable: true).select("auto")
        #expect(selection.backend.name == "kvm")
        #expect(selection.reason.contains("strongest working isolation (hardware-vm)"))
        // ...but only a backend that launches sandboxes: otherwise auto says so and takes the next one.
        var withoutLaunching = registry(kvm: Self.acceleratedKVM, processAvailable: true)
        withoutLaunching.register(KVMThatCannotLaunch(facts: Self.acceleratedKVM))
        let fallback = try withoutLaunching.select("auto")
        #expect(fallback.backend.name == "process")
        #expect(fallback.reason.contains("kvm: hardware-accelerated (svm)") && fallback.reason.contains("sandboxes are not implemented yet"))
    }

    @Test func autoPassesOverUnacceleratedKVM() throws {
        let selection = try registry(kvm: Self.softwareKVM, processAvailable: true).select("auto")
        #expect(selection.backend.name == "process")
        #expect(selection.reason.contains("passed over kvm: present, not hardware-accelerated"))
    }

    @Test func autoNeverPicksFake() {
        #expect(throws: HyperError.self) {
            _ = try registry(kvm: { KVMHostFacts() }, processAvailable: false).select("auto")
        }
    }

    @Test func verboseRunSaysWhichBackendAndWhy() {
        let result = runInProcess(["run", "-v", "--backend", "auto", "--", "true"],
                                  registry: registry(kvm: Self.softwareKVM, processAvailable: true))
        #expect(result.errorOutput.contains("backend process: auto picked process"))
        #expect(result.errorOutput.contains("passed over kvm: present, not hardware-accelerated"))
    }

    @Test func kvmRefusesAtOnceWhereItIsNotAccelerated() {
        let result = runInProcess(["run", "--backend", "kvm", "--", "true"], registry: registry(kvm: Self.softwareKVM, processAvailable: true))
        #expect(result.exitCode == 125)
        #expect(result.errorOutput.contains("not hardware-accelerated") && result.errorOutput.contains("--allow-unaccelerated"))
    }

    @Test func kvmRefusesWhatItDoesNotEnforce() {
        let result = runInProcess(["run", "--backend", "kvm", "--mount", "/tmp:/data", "--", "true"],
                                  registry: registry(kvm: Self.acceleratedKVM, processAvailable: true))
        #expect(result.exitCode == 125)
        #expect(result.errorOutput.contains("does not enforce: mounts"))
    }

    @Test(arguments: [["--kernel", "/boot/vmlinuz"], ["--initrd", "/tmp/x"], ["--disk", "/etc/hostname"], ["--guest-console", "/tmp/c"]])
    func machineFlagsNeedAMicroVMBackend(flag: [String]) {
        let result = runInProcess(["run", "--backend", "fake"] + flag + ["--", "true"])
        #expect(result.exitCode == 125)
        #expect(result.errorOutput.contains("\(flag[0]) applies to microVM backends"))
    }

    @Test func disksMustBeFiles() {
        let result = runInProcess(["run", "--backend", "kvm", "--allow-unaccelerated", "--disk", "/tmp", "--", "true"],
                                  registry: registry(kvm: Self.softwareKVM, processAvailable: true))
        #expect(result.exitCode == 125)
        #expect(result.errorOutput.contains("--disk: /tmp is not a regular file"))
    }

    @Test func backendsJSONHasExactlyTheDocumentedKeys() throws {
        let result = runInProcess(["backends", "--json"], registry: registry(kvm: Self.softwareKVM, processAvailable: true))
        #expect(result.exitCode == 0)
        guard case let .array(rows) = try JSONValue.parse(result.output) else {
            Issue.record("not an array")
            return
        }
        #expect(rows.compactMap { $0["name"] } == [.string("kvm"), .string("process"), .string("fake")])
        for row in rows {
            guard case let .object(members) = row else { continue }
            #expect(members.map(\.0) == ["name", "available", "isolation", "accelerated", "reason"])
        }
        #expect(rows[0]["accelerated"] == .bool(false))
        #expect(rows[1]["accelerated"] == .null)
    }

    @Test func backendsTableOnThisHostIsTruthful() {
        let result = runInProcess(["backends"])
        let facts = KVMHostFacts.gather()
        let kvmLine = result.output.split(separator: "\n").first { $0.hasPrefix("kvm") } ?? ""
        if facts.deviceExists, facts.softwareProvider != nil || facts.hardwareVirtualizationFlag == nil {
            #expect(kvmLine.contains("not hardware-accelerated"))
        }
        #expect(result.output.split(separator: "\n").count == 4)
    }
}

@Suite("The hyperctl binary", .enabled(if: hyperctlBinaryExists, "needs the hyperctl binary built beside the tests"))
struct BinaryTests {
    @Test func stdoutPassesThroughAndExitCodesAreReal() throws {
        let hello = try runBinary(["run", "--backend", "fake", "--seed", "7", "--", "echo", "hello"])
        #expect(hello.exitCode == 0 && hello.output == "hello\n" && hello.errorOutput.isEmpty)
        #expect(try runBinary(["run", "--backend", "fake", "--", "exit", "42"]).exitCode == 42)
        #expect(try runBinary(["run", "--backend", "nosuch", "--", "true"]).exitCode == 125)
    }

    @Test(.enabled(if: ProcessBackend().probe().isAvailable, "needs user namespaces and seccomp"))
    func processBackendExitCodes() throws {
        #expect(try runBinary(["run", "--backend", "process", "--", "sh", "-c", "exit 42"]).exitCode == 42)
        let missing = try runBinary(["run", "--backend", "process", "--", "/no/such"])
        #expect(missing.exitCode == 127 && missing.errorOutput.contains("/no/such"))
        let echo = try runBinary(["run", "--backend", "process", "--", "echo", "from", "a", "sandbox"])
        #expect(echo.exitCode == 0 && echo.output == "from a sandbox\n")
        #expect(try runBinary(["run", "--backend", "process", "--timeout", "300ms", "--", "sleep", "5"]).exitCode == 124)
        let badMount = try runBinary(["run", "--backend", "process", "--mount", "/no/such/dir:/x", "--", "true"])
        #expect(badMount.exitCode == 125 && badMount.errorOutput.contains("mounts[0].source: /no/such/dir does not exist"))
    }

    @Test(.enabled(if: ProcessBackend().probe().isAvailable, "needs user namespaces and seccomp"))
    func extraInheritedDescriptorsNeitherHangNorLeak() throws {
        // A caller's open descriptors 3 and 4 once left the helper holding its own configuration pipe open.
        let script = "exec 3</dev/null 4</dev/null 7</etc/hostname; exec timeout 20 \(hyperctlBinary) run --backend process -- sh -c 'ls /proc/self/fd | tr \"\\n\" \" \"'"
        let result = try runBinary(["run", "--backend", "fake", "true"])  // warms the binary path
        #expect(result.exitCode == 0)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "hyperctl hung or failed: \(process.terminationStatus)")
        let descriptors = text.split(separator: " ").compactMap { Int($0) }
        #expect(!descriptors.isEmpty && descriptors.allSatisfy { $0 <= 3 }, "descriptors inside: \(text)")
    }

    @Test(.enabled(if: ProcessBackend().probe().isAvailable, "needs user namespaces and seccomp"))
    func killingHyperctlTakesTheSandboxWithIt() throws {
        let marker = "53.\(Int.random(in: 100_000...999_999))"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: hyperctlBinary)
        // A memory limit gives the sandbox cgroups, which must go too.
        process.arguments = ["run", "--backend", "process", "--memory", "64M", "--", "sh", "-c", "sleep \(marker) & sleep \(marker)"]
        process.currentDirectoryURL = URL(fileURLWithPath: "/tmp")
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        #expect(waitFor { sandboxProcesses(marker).count >= 2 }, "the sandbox did not start")
        let cgroupPrefix = "hyperctl-sandbox-\(process.processIdentifier)-"
        func cgroups() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup/memory")) ?? []).filter { $0.hasPrefix(cgroupPrefix) }
                + ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup/hyperctl")) ?? []).filter { $0.hasPrefix("sandbox-\(process.processIdentifier)-") }
        }
        let hadCgroup = !cgroups().isEmpty
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(waitFor { sandboxProcesses(marker).isEmpty }, "sandbox processes survived hyperctl's death")
        #expect(waitFor(seconds: 15) { cgroups().isEmpty }, "cgroups survived hyperctl's death: \(cgroups())")
        if ProcessHostFacts.gather().limitControllers.contains("memory") { #expect(hadCgroup, "the sandbox had no memory cgroup to clean up") }
    }

    @Test(.enabled(if: access("/dev/kvm", R_OK | W_OK) == 0, "needs read-write access to /dev/kvm"))
    func bootRunsAPVHGuestOnKVM() throws {
        let kernel = NSTemporaryDirectory() + "hyperctl-guest-\(UUID().uuidString).elf"
        try Data(TinyGuest.serialHelloImage(message: "booted by hyperctl\n")).write(to: URL(fileURLWithPath: kernel))
        defer { try? FileManager.default.removeItem(atPath: kernel) }
        let booted = try runBinary(["boot", "--backend", "kvm", "--kernel", kernel, "--timeout", "30s"])
        #expect(booted.exitCode == 0 && booted.output == "booted by hyperctl\n", "\(booted.errorOutput)")
        let garbage = NSTemporaryDirectory() + "hyperctl-garbage-\(UUID().uuidString)"
        try Data(repeating: 0x41, count: 4096).write(to: URL(fileURLWithPath: garbage))
        defer { try? FileManager.default.removeItem(atPath: garbage) }
        let bad = try runBinary(["boot", "--backend", "kvm", "--kernel", garbage])
        #expect(bad.exitCode == 125 && bad.errorOutput.contains("neither an ELF (PVH) image nor a bzImage"))
    }

    @Test func interactiveStdinReachesTheCommand() throws {
        let result = try runBinary(["run", "--backend", "fake", "-i", "--", "cat"], input: "typed input\n")
        #expect(result.output == "typed input\n")
    }
}

/// Host processes whose command line contains `marker`.
func sandboxProcesses(_ marker: String) -> [Int32] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { Int32($0) }.filter { pid in
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        return String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).contains("sleep \(marker)")
    }
}

/// Polls `condition` for up to five seconds.
func waitFor(seconds: Double = 5, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

@Suite("Snapshot folders refused before a restore", .enabled(if: access("/dev/kvm", R_OK | W_OK) == 0, "needs read-write access to /dev/kvm"))
struct SnapshotFolderTests {
    @Test func aForeignOrCorruptSnapshotIsRefusedWith125() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let run = { (folder: String) in
            runInProcess(["run", "--backend", "kvm", "--allow-unaccelerated", "--from-snapshot", folder, "--", "true"], directory: directory)
        }
        // A folder with no description, one of another format, and one whose machine state is damaged.
        try FileManager.default.createDirectory(atPath: directory + "/empty", withIntermediateDirectories: true)
        var result = run(directory + "/empty")
        #expect(result.exitCode == 125 && result.errorOutput.contains("not a sandbox snapshot"), "\(result.errorOutput)")
        try FileManager.default.createDirectory(atPath: directory + "/future", withIntermediateDirectories: true)
        try #"{"format": 99, "memoryBytes": "536870912", "vcpus": 1}"#.write(toFile: directory + "/future/sandbox.json", atomically: true, encoding: .utf8)
        result = run(directory + "/future")
        #expect(result.exitCode == 125 && result.errorOutput.contains("another format"), "\(result.errorOutput)")
        try FileManager.default.createDirectory(atPath: directory + "/damaged", withIntermediateDirectories: true)
        try #"{"format": 1, "memoryBytes": "536870912", "vcpus": 1}"#.write(toFile: directory + "/damaged/sandbox.json", atomically: true, encoding: .utf8)
        try Data("HYPRSNAP-but-not-really".utf8).write(to: URL(fileURLWithPath: directory + "/damaged/state"))
        result = run(directory + "/damaged")
        #expect(result.exitCode == 125 && result.errorOutput.contains("snapshot"), "\(result.errorOutput)")
        // The machine size must be the snapshot's.
        result = runInProcess(["run", "--backend", "kvm", "--allow-unaccelerated", "--from-snapshot", directory + "/damaged", "--memory", "1G", "--", "true"],
                              directory: directory)
        #expect(result.exitCode == 125 && result.errorOutput.contains("the snapshot is of a 512"), "\(result.errorOutput)")
    }
}
