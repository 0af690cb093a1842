import Foundation
import Hyper
import Testing
@testable import hyperctl

/// The result of one hyperctl invocation.
struct CLIResult {
    var exitCode: Int32
    var output: String
    var errorOutput: String
}

/// Runs the CLI in this process with its streams on pipes, as `hyperctl ARGS` would in `directory`.
func runInProcess(_ arguments: [String], directory: String = "/tmp", registry: BackendRegistry = BackendCatalog.makeRegistry()) -> CLIResult {
    let output = Pipe()
    let errorOutput = Pipe()
    let context = CommandContext(
        registry: registry,
        streams: StandardStreams(input: FileHandle.nullDevice.fileDescriptor,
                                 output: output.fileHandleForWriting.fileDescriptor,
                                 error: errorOutput.fileHandleForWriting.fileDescriptor),
        currentDirectory: directory)
    let code = HyperCtl.main(arguments: arguments, context: context)
    try? output.fileHandleForWriting.close()
    try? errorOutput.fileHandleForWriting.close()
    return CLIResult(
        exitCode: code,
        output: String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self),
        errorOutput: String(decoding: errorOutput.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
}

/// The hyperctl binary that `swift build` put beside the test bundle.
let hyperctlBinary: String = {
    let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    return bundle.appendingPathComponent("hyperctl").path
}()

/// Whether the built hyperctl binary is there to run.
let hyperctlBinaryExists = FileManager.default.isExecutableFile(atPath: hyperctlBinary)

/// Runs the real hyperctl binary as a child process, with `environment` added to this process's.
func runBinary(_ arguments: [String], directory: String = "/tmp", input: String? = nil, environment: [String: String] = [:]) throws -> CLIResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: hyperctlBinary)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    process.currentDirectoryURL = URL(fileURLWithPath: directory)
    let output = Pipe()
    let errorOutput = Pipe()
    let inputPipe = Pipe()
    process.standardOutput = output
    process.standardError = errorOutput
    process.standardInput = inputPipe
    try process.run()
    if let input { inputPipe.fileHandleForWriting.write(Data(input.utf8)) }
    try inputPipe.fileHandleForWriting.close()
    let outputData = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = errorOutput.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return CLIResult(exitCode: process.terminationStatus,
                     output: String(decoding: outputData, as: UTF8.self),
                     errorOutput: String(decoding: errorData, as: UTF8.self))
}

/// A fresh temporary directory, removed by the caller.
func makeTemporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "hyperctl-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}
