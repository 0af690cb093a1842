import Foundation
import Hyper
import Testing
@testable import HyperProcess

/// What a sandboxed command did.
struct SandboxRun {
    var exit: SandboxExit
    var output: String
    var errorOutput: String
    /// The handle's report details (egress decisions, for example).
    var details: [(String, JSONValue)] = []
}

/// Whether this host can run process sandboxes (the suite says so through its condition when not).
let processSandboxesAvailable = ProcessBackend().probe().isAvailable

/// Whether python3 is installed, for tests that need a syscall-level probe.
let python3Available = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")

/// A workspace directory for one test, removed afterwards by the caller.
func makeWorkspace() throws -> String {
    let path = "/tmp/hyperctl-process-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Runs `argv` in a real process sandbox and collects its output.
func runSandboxed(_ argv: [String], workspace: String? = nil, stdin: String? = nil,
                  configure: (inout SandboxSpec) -> Void = { _ in }) throws -> SandboxRun {
    let ownWorkspace = workspace == nil
    let directory = try workspace ?? makeWorkspace()
    defer { if ownWorkspace { try? FileManager.default.removeItem(atPath: directory) } }
    var spec = SandboxSpec()
    spec.command = argv
    spec.workspace = directory
    spec.interactive = stdin != nil
    configure(&spec)
    let validated = try spec.validated()
    let output = Pipe()
    let errorOutput = Pipe()
    let input = Pipe()
    var options = LaunchOptions()
    options.streams = StandardStreams(input: input.fileHandleForReading.fileDescriptor,
                                      output: output.fileHandleForWriting.fileDescriptor,
                                      error: errorOutput.fileHandleForWriting.fileDescriptor)
    let handle = try ProcessBackend().launch(validated, options: options)
    try output.fileHandleForWriting.close()
    try errorOutput.fileHandleForWriting.close()
    try input.fileHandleForReading.close()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    // Read both streams concurrently with the wait so a chatty command cannot fill a pipe and stall.
    let collected = CollectedOutput()
    let group = DispatchGroup()
    for (pipe, isError) in [(output, false), (errorOutput, true)] {
        group.enter()
        DispatchQueue.global().async {
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            collected.store(String(decoding: data, as: UTF8.self), isError: isError)
            group.leave()
        }
    }
    let exit = try handle.wait()
    group.wait()
    return SandboxRun(exit: exit, output: collected.output, errorOutput: collected.errorOutput, details: handle.reportDetails)
}

/// Runs a shell script in a sandbox.
func runScript(_ script: String, workspace: String? = nil, configure: (inout SandboxSpec) -> Void = { _ in }) throws -> SandboxRun {
    try runSandboxed(["/bin/sh", "-c", script], workspace: workspace, configure: configure)
}

final class CollectedOutput: @unchecked Sendable {
    private let lock = NSLock()
    private var outputText = ""
    private var errorText = ""
    func store(_ text: String, isError: Bool) {
        lock.lock()
        if isError { errorText = text } else { outputText = text }
        lock.unlock()
    }
    var output: String { lock.lock(); defer { lock.unlock() }; return outputText }
    var errorOutput: String { lock.lock(); defer { lock.unlock() }; return errorText }
}

/// Host processes whose command line contains `marker`.
func hostProcesses(containing marker: String) -> [Int32] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { Int32($0) }.filter { pid in
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        return String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).contains(marker)
    }
}

/// Polls `condition` for up to `seconds`, returning whether it became true.
func eventually(within seconds: Double = 3, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}

/// The cgroup directories hyperctl created for sandboxes of this process.
func leftoverCgroups() -> [String] {
    let pid = ProcessInfo.processInfo.processIdentifier
    var found: [String] = []
    for controller in ["memory", "pids", "cpu", "unified", "hyperctl"] {
        let folder = "/sys/fs/cgroup/\(controller)"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        found += entries.filter { $0.contains("sandbox-\(pid)-") }.map { folder + "/" + $0 }
    }
    let v2 = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup/hyperctl")) ?? []
    found += v2.filter { $0.contains("sandbox-\(pid)-") }
    return found
}
