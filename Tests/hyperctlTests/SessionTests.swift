import Foundation
import Hyper
import HyperProcess
import Testing

/// A private session store for one test, and hyperctl run against it.
struct SessionFixture {
    let stateDirectory: String
    let workspace: String

    init() throws {
        stateDirectory = try makeTemporaryDirectory()
        workspace = try makeTemporaryDirectory()
    }

    func hyperctl(_ arguments: [String], input: String? = nil) throws -> CLIResult {
        try runBinary(arguments, directory: workspace, input: input, environment: ["HYPERCTL_STATE_DIR": stateDirectory])
    }

    /// `ps --json`, as name → entry.
    func listing() throws -> [String: JSONValue] {
        let result = try hyperctl(["ps", "--json"])
        guard result.exitCode == 0, case let .array(items) = try JSONValue.parse(result.output) else { return [:] }
        var byName: [String: JSONValue] = [:]
        for item in items { if let name = item.string("name") { byName[name] = item } }
        return byName
    }

    func cleanUp() {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: stateDirectory)) ?? [] {
            _ = try? hyperctl(["rm", "-f", name])
        }
        try? FileManager.default.removeItem(atPath: stateDirectory)
        try? FileManager.default.removeItem(atPath: workspace)
    }
}

@Suite("Session sandboxes: create, exec, ps, stop, rm", .serialized,
       .enabled(if: hyperctlBinaryExists, "needs the hyperctl binary"),
       .enabled(if: ProcessBackend().probe().isAvailable, "needs user namespaces and seccomp"))
struct SessionTests {
    @Test func createTwoConcurrentExecsStopAndRemove() throws {
        let fixture = try SessionFixture()
        defer { fixture.cleanUp() }
        let created = try fixture.hyperctl(["create", "--backend", "process", "--name", "work", "--net", "allow:example.org:443"])
        #expect(created.exitCode == 0 && created.output == "work\n", "\(created.errorOutput)")

        // Each command waits for the other to have started: they finish only if they run at the same time.
        let script = "touch /tmp/$0; for i in $(seq 1 200); do [ -e /tmp/$1 ] && echo $0 saw $1 && exit 0; sleep 0.05; done; exit 9"
        let results = Locked<[CLIResult?]>([nil, nil])
        DispatchQueue.concurrentPerform(iterations: 2) { index in
            let (me, other) = index == 0 ? ("a", "b") : ("b", "a")
            let result = try? fixture.hyperctl(["exec", "work", "--", "sh", "-c", script, me, other])
            results.withLock { $0[index] = result }
        }
        #expect(results.value.map { $0?.output } == ["a saw b\n", "b saw a\n"])
        #expect(results.value.map { $0?.exitCode } == [0, 0])

        // One sandbox: what one command leaves, the next sees; its environment names the egress proxy.
        let shared = try fixture.hyperctl(["exec", "-e", "GREETING=hi", "work", "--", "sh", "-c", "ls /tmp/a /tmp/b; echo $GREETING $HTTPS_PROXY; exit 3"])
        #expect(shared.output == "/tmp/a\n/tmp/b\nhi http://127.0.0.1:3128\n" && shared.exitCode == 3, "\(shared.output) \(shared.errorOutput)")
        #expect(try fixture.hyperctl(["exec", "work", "--", "no-such-program"]).exitCode == 127)

        let running = try fixture.listing()["work"]
        #expect(running?.string("state") == "running" && running?.string("backend") == "process")
        #expect(running?.integer("commands") == 4)
        // Its hostname is its name.
        #expect(try fixture.hyperctl(["exec", "work", "--", "sh", "-c", "hostname; cat /etc/hostname"]).output == "work\nwork\n")
        // Snapshots need a microVM.
        let snapshot = try fixture.hyperctl(["snapshot", "work", "--to", NSTemporaryDirectory() + "hyperctl-snapshot-\(getpid())"])
        #expect(snapshot.exitCode == 125 && snapshot.errorOutput.contains("snapshots need a microVM sandbox"), "\(snapshot.errorOutput)")
        #expect((running?.integer("memoryBytes") ?? 0) > 0)

        #expect(try fixture.hyperctl(["stop", "work"]).exitCode == 0)
        #expect(try fixture.listing()["work"]?.string("state") == "stopped")
        let afterStop = try fixture.hyperctl(["exec", "work", "--", "true"])
        #expect(afterStop.exitCode == 125 && afterStop.errorOutput.contains("is stopped"))
        #expect(try fixture.hyperctl(["rm", "work"]).exitCode == 0)
        #expect(try fixture.listing().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: fixture.stateDirectory + "/work"))
    }

    @Test func theTimeLimitEndsTheSandboxAndItsCommandsWith124() throws {
        let fixture = try SessionFixture()
        defer { fixture.cleanUp() }
        #expect(try fixture.hyperctl(["create", "--backend", "process", "--name", "brief", "--timeout", "1s"]).exitCode == 0)
        let result = try fixture.hyperctl(["exec", "brief", "--", "sleep", "30"])
        #expect(result.exitCode == 124, "\(result.errorOutput)")
        #expect(try fixture.listing()["brief"]?.string("state") == "stopped")
    }

    @Test func stopKillsWhatIgnoresSIGTERMAfterTheGracePeriod() throws {
        let fixture = try SessionFixture()
        defer { fixture.cleanUp() }
        #expect(try fixture.hyperctl(["create", "--backend", "process", "--name", "stubborn"]).exitCode == 0)
        // A background process that ignores SIGTERM outlives its exec; only the kill after the grace ends it.
        #expect(try fixture.hyperctl(["exec", "stubborn", "--", "sh", "-c", "trap '' TERM; sleep 300 >/dev/null 2>&1 &"]).exitCode == 0)
        let stopped = try fixture.hyperctl(["stop", "--time", "1", "stubborn"])
        #expect(stopped.exitCode == 0 && stopped.output == "stubborn\n", "\(stopped.errorOutput)")
        #expect(try fixture.listing()["stubborn"]?.string("state") == "stopped")
    }

    @Test func badNamesAndMissingSandboxesAre125WithAMessage() throws {
        let fixture = try SessionFixture()
        defer { fixture.cleanUp() }
        let missing = try fixture.hyperctl(["exec", "nowhere", "--", "true"])
        #expect(missing.exitCode == 125 && missing.errorOutput.contains("no sandbox named nowhere"))
        let badName = try fixture.hyperctl(["create", "--backend", "process", "--name", "../escape"])
        #expect(badName.exitCode == 125 && badName.errorOutput.contains("sandbox name"))
        #expect(try fixture.hyperctl(["stop", "nowhere"]).exitCode == 125)
        #expect(try fixture.hyperctl(["rm", "nowhere"]).exitCode == 125)
        let withCommand = try fixture.hyperctl(["create", "--backend", "process", "--", "true"])
        #expect(withCommand.exitCode == 125 && withCommand.errorOutput.contains("create takes no command"))
        let fake = try fixture.hyperctl(["create", "--backend", "fake", "--name", "simulated"])
        #expect(fake.exitCode == 125 && fake.errorOutput.contains("does not run session sandboxes"))
        #expect(try fixture.listing().isEmpty, "a failed create leaves nothing behind")
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") && getuid() == 0, "needs root and python3 to act as another user"))
    func anotherUserCannotUseTheControlSocket() throws {
        let fixture = try SessionFixture()
        defer { fixture.cleanUp() }
        #expect(try fixture.hyperctl(["create", "--backend", "process", "--name", "mine"]).exitCode == 0)
        let socket = fixture.stateDirectory + "/mine/control.sock"
        // As uid 4242 (made up for this test): try to connect and ask for an exec.
        let attempt = """
            import os, socket, sys
            os.setgroups([]); os.setgid(4242); os.setuid(4242)
            try:
                s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
                # A supervisor that checks its callers answers a stranger at once, before any request.
                print(s.recv(4096).decode().strip())
            except socket.timeout:
                print("no answer")
            except OSError as error:
                print("refused:", error.strerror)
            """
        func tryAsOtherUser() throws -> String {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            process.arguments = ["-c", attempt, socket]
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }
        #expect(try tryAsOtherUser().hasPrefix("refused: Permission denied"), "the private folder keeps other users out")
        // Even with the folder and socket opened up, the supervisor checks who is calling.
        chmod(fixture.stateDirectory, 0o755)
        chmod(fixture.stateDirectory + "/mine", 0o755)
        chmod(socket, 0o777)
        let answer = try tryAsOtherUser()
        #expect(answer.contains("permission denied") && !answer.contains("\"state\""), "\(answer)")
    }

    @Test func aKilledSupervisorIsReportedDeadAndRmCleansUp() throws {
        let fixture = try SessionFixture()
        defer { fixture.cleanUp() }
        #expect(try fixture.hyperctl(["create", "--backend", "process", "--name", "victim", "--net", "allow:example.org:80"]).exitCode == 0)
        let record = try JSONValue.parse(String(contentsOfFile: fixture.stateDirectory + "/victim/session.json", encoding: .utf8))
        let pid = try #require(record.integer("supervisorPid"))
        let egressFolders = { () -> [String] in
            ((try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? []).filter { $0.hasPrefix("hyperctl-egress-sandbox-\(pid)-") }
        }
        #expect(egressFolders().count == 1)
        // A process left running inside, to see that the sandbox goes with its supervisor.
        let marker = String(31_000 + Int.random(in: 0..<999))
        #expect(try fixture.hyperctl(["exec", "victim", "--", "sh", "-c", "sleep \(marker) >/dev/null 2>&1 &"]).exitCode == 0)
        let sleepers = { () -> Int in
            ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { entry in
                guard Int(entry) != nil, let command = try? String(contentsOfFile: "/proc/\(entry)/cmdline", encoding: .utf8) else { return false }
                return command == "sleep\0\(marker)\0"
            }.count
        }
        #expect(sleepers() == 1)
        kill(Int32(pid), SIGKILL)
        var state = ""
        for _ in 0..<100 {
            state = try fixture.listing()["victim"]?.string("state") ?? ""
            if state == "dead" { break }
            usleep(50_000)
        }
        #expect(state == "dead")
        let exec = try fixture.hyperctl(["exec", "victim", "--", "true"])
        #expect(exec.exitCode == 125 && exec.errorOutput.contains("is dead"))
        #expect(egressFolders().isEmpty, "the sweep removed the dead supervisor's proxy folder")
        for _ in 0..<100 where sleepers() > 0 { usleep(50_000) }
        #expect(sleepers() == 0, "the sandbox's processes ended with its supervisor")
        #expect(try fixture.hyperctl(["rm", "victim"]).exitCode == 0)
        #expect(try fixture.listing().isEmpty)
    }

    @Test(.enabled(if: tmuxAvailable, "needs tmux to drive a real terminal"))
    func anInteractiveShellInATerminalEchoesInputAndReturnsItsExitCode() throws {
        let fixture = try SessionFixture()
        defer { fixture.cleanUp() }
        #expect(try fixture.hyperctl(["create", "--backend", "process", "--name", "term"]).exitCode == 0)
        let server = "hyperctl-session-test-\(getpid())"
        let exitFile = NSTemporaryDirectory() + "hyperctl-tmux-exit-\(UUID().uuidString)"
        defer {
            _ = try? tmux(server, ["kill-server"])
            try? FileManager.default.removeItem(atPath: exitFile)
        }
        try tmux(server, ["new-session", "-d", "-s", "sandbox", "-x", "100", "-y", "30",
                          "HYPERCTL_STATE_DIR=\(fixture.stateDirectory) \(hyperctlBinary) exec -it term -- sh; echo $? > \(exitFile); sleep 30"])
        try tmux(server, ["send-keys", "-t", "sandbox", "echo typed-$((6*7)); stty size", "Enter"])
        let screen = try tmuxScreen(server, contains: "30 100")
        #expect(screen.contains("typed-42") && screen.contains("30 100"), "\(screen)")
        try tmux(server, ["resize-window", "-t", "sandbox", "-x", "120", "-y", "40"])
        usleep(200_000)
        try tmux(server, ["send-keys", "-t", "sandbox", "stty size; exit 4", "Enter"])
        #expect(exitStatus(writtenTo: exitFile) == "4\n")
        #expect(try tmuxScreen(server, contains: "40 120").contains("40 120"))
    }
}
