import Foundation
import HyperProcess
import Testing

/// Whether tmux is installed to drive a real terminal.
let tmuxAvailable = FileManager.default.isExecutableFile(atPath: "/usr/bin/tmux")

/// Runs tmux with arguments on a private server and returns its output.
///
/// It goes through `system(3)` and a file rather than Foundation's `Process`: `new-session` starts a server
/// that inherits the client's descriptors, and `Process` would wait for those to close.
@discardableResult
func tmux(_ server: String, _ arguments: [String]) throws -> String {
    let outputPath = NSTemporaryDirectory() + "hyperctl-tmux-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: outputPath) }
    func quoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }
    let command = (["/usr/bin/tmux", "-L", server] + arguments).map(quoted).joined(separator: " ")
    _ = system(command + " </dev/null >" + quoted(outputPath) + " 2>/dev/null")
    return (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
}

/// Polls a tmux pane named `sandbox` until `text` appears; returns the screen.
func tmuxScreen(_ server: String, contains text: String) throws -> String {
    var captured = ""
    for _ in 0..<100 {
        captured = try tmux(server, ["capture-pane", "-t", "sandbox", "-p"])
        if captured.contains(text) { break }
        usleep(50_000)
    }
    return captured
}

/// Waits until the file a pane's shell writes an exit code to holds a whole line; returns it.
func exitStatus(writtenTo path: String) -> String {
    var status = ""
    for _ in 0..<100 {
        status = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        if status.hasSuffix("\n") { break }
        usleep(50_000)
    }
    return status
}

@Suite("Interactive terminals", .serialized,
       .enabled(if: tmuxAvailable, "needs tmux to drive a real terminal"),
       .enabled(if: hyperctlBinaryExists, "needs the hyperctl binary"),
       .enabled(if: ProcessBackend().probe().isAvailable, "needs user namespaces and seccomp"))
struct TerminalTests {
    @Test func shellInATerminalEchoesInputFollowsResizesAndReturnsItsExitCode() throws {
        let server = "hyperctl-test-\(getpid())"
        let exitFile = NSTemporaryDirectory() + "hyperctl-tmux-exit-\(UUID().uuidString)"
        defer {
            _ = try? tmux(server, ["kill-server"])
            try? FileManager.default.removeItem(atPath: exitFile)
        }
        // The pane's shell records hyperctl's exit code, as a user's shell would see it.
        try tmux(server, ["new-session", "-d", "-s", "sandbox", "-x", "100", "-y", "30",
                          "\(hyperctlBinary) run --backend process -it -- sh; echo $? > \(exitFile); sleep 30"])
        try tmux(server, ["send-keys", "-t", "sandbox", "echo typed-$((6*7)); stty size", "Enter"])
        let first = try tmuxScreen(server, contains: "30 100")
        #expect(first.contains("typed-42"))
        #expect(first.contains("30 100"))
        try tmux(server, ["resize-window", "-t", "sandbox", "-x", "120", "-y", "40"])
        usleep(200_000)
        try tmux(server, ["send-keys", "-t", "sandbox", "stty size", "Enter"])
        #expect(try tmuxScreen(server, contains: "40 120").contains("40 120"), "the new window size did not reach the sandbox")
        try tmux(server, ["send-keys", "-t", "sandbox", "exit 5", "Enter"])
        #expect(exitStatus(writtenTo: exitFile) == "5\n")
    }
}
