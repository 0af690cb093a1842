import Foundation
import HyperAgentProtocol
import Testing

/// A fresh temporary directory, removed by the caller.
func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "hyperctl-tree-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Sends the tree under `source` into `writer` the way a transfer does, message by message.
func transfer(_ source: String, into writer: FileTreeWriter) throws {
    for header in try FileTree.list(root: source) {
        try writer.begin(header)
        if header.kind == .regular && header.size > 0 {
            let reader = try FileChunkReader(path: source + "/" + header.path, size: header.size)
            while let chunk = try reader.next() { try writer.data(chunk) }
        }
    }
    try writer.finish()
}

@Suite("Workspace transfer on the file system", .serialized)
struct FileTreeTests {
    @Test(arguments: ["", "/etc/passwd", "a/../b", "..", ".", "a//b", "a/./b", "a/", String(repeating: "x", count: 256)])
    func unsafePathsAreRefused(path: String) {
        #expect(throws: AgentProtocolError.self) { _ = try FileTree.components(of: path) }
    }

    @Test func aTreeArrivesWhole() throws {
        let source = try temporaryDirectory(), destination = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: source); try? FileManager.default.removeItem(atPath: destination) }
        try FileManager.default.createDirectory(atPath: source + "/sub/deeper", withIntermediateDirectories: true)
        try Data("small".utf8).write(to: URL(fileURLWithPath: source + "/small.txt"))
        let big = Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try big.write(to: URL(fileURLWithPath: source + "/sub/deeper/big.bin"))
        try Data().write(to: URL(fileURLWithPath: source + "/empty"))
        try FileManager.default.createSymbolicLink(atPath: source + "/sub/link", withDestinationPath: "../small.txt")
        chmod(source + "/small.txt", 0o751)
        try transfer(source, into: try FileTreeWriter(root: destination))
        #expect(try Data(contentsOf: URL(fileURLWithPath: destination + "/sub/deeper/big.bin")) == big)
        #expect(try String(contentsOfFile: destination + "/small.txt", encoding: .utf8) == "small")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: destination + "/sub/link") == "../small.txt")
        #expect(FileManager.default.fileExists(atPath: destination + "/empty"))
        let attributes = try FileManager.default.attributesOfItem(atPath: destination + "/small.txt")
        #expect((attributes[.posixPermissions] as? Int) == 0o751)
        let sourceDate = try FileManager.default.attributesOfItem(atPath: source + "/small.txt")[.modificationDate] as? Date
        #expect(attributes[.modificationDate] as? Date == sourceDate)
    }

    @Test func aPlantedLinkIsNeverFollowed() throws {
        let destination = try temporaryDirectory(), outside = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: destination); try? FileManager.default.removeItem(atPath: outside) }
        try Data("keep".utf8).write(to: URL(fileURLWithPath: outside + "/victim"))
        let writer = try FileTreeWriter(root: destination)
        // The hostile sender plants links to the outside, then writes through them.
        try writer.begin(FileHeader(path: "escape", kind: .symbolicLink, mode: 0o777, modificationNanoseconds: 0, linkTarget: outside))
        try writer.begin(FileHeader(path: "victim", kind: .symbolicLink, mode: 0o777, modificationNanoseconds: 0, linkTarget: outside + "/victim"))
        #expect(throws: AgentProtocolError.self) {
            try writer.begin(FileHeader(path: "escape/victim", kind: .regular, mode: 0o644, modificationNanoseconds: 0, size: 3))
        }
        try writer.remove("escape/victim")
        #expect(FileManager.default.fileExists(atPath: outside + "/victim"), "a removal through a link removes nothing")
        // Writing a file over a link replaces the link; the link's target is untouched.
        try writer.begin(FileHeader(path: "victim", kind: .regular, mode: 0o644, modificationNanoseconds: 0, size: 3))
        try writer.data(Array("new".utf8))
        #expect(try String(contentsOfFile: outside + "/victim", encoding: .utf8) == "keep")
        #expect(try String(contentsOfFile: destination + "/victim", encoding: .utf8) == "new")
        #expect(try FileManager.default.contentsOfDirectory(atPath: outside) == ["victim"])
    }

    @Test func protectedPathsAreSkippedAndTheirDataSwallowed() throws {
        let destination = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: destination) }
        try FileManager.default.createDirectory(atPath: destination + "/.git/hooks", withIntermediateDirectories: true)
        let writer = try FileTreeWriter(root: destination, protectedPaths: [".git/hooks", ".git/config"])
        try writer.begin(FileHeader(path: ".git/hooks/pre-commit", kind: .regular, mode: 0o755, modificationNanoseconds: 0, size: 4))
        try writer.data(Array("evil".utf8))
        try writer.begin(FileHeader(path: ".git/config", kind: .regular, mode: 0o644, modificationNanoseconds: 0, size: 0))
        try writer.remove(".git/hooks")
        try writer.begin(FileHeader(path: ".git/HEAD", kind: .regular, mode: 0o644, modificationNanoseconds: 0, size: 2))
        try writer.data(Array("ok".utf8))
        try writer.finish()
        #expect(writer.skipped == [".git/hooks/pre-commit", ".git/config", ".git/hooks"])
        #expect(!FileManager.default.fileExists(atPath: destination + "/.git/hooks/pre-commit"))
        #expect(!FileManager.default.fileExists(atPath: destination + "/.git/config"))
        #expect(FileManager.default.fileExists(atPath: destination + "/.git/hooks"))
        #expect(try String(contentsOfFile: destination + "/.git/HEAD", encoding: .utf8) == "ok")
    }

    @Test func sizesMustMatchTheHeader() throws {
        let destination = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: destination) }
        let writer = try FileTreeWriter(root: destination)
        try writer.begin(FileHeader(path: "f", kind: .regular, mode: 0o644, modificationNanoseconds: 0, size: 2))
        #expect(throws: AgentProtocolError.self) { try writer.data([1, 2, 3]) }
        try writer.data([1])
        #expect(throws: AgentProtocolError.self) { try writer.begin(FileHeader(path: "g", kind: .directory, mode: 0o755, modificationNanoseconds: 0)) }
        #expect(throws: AgentProtocolError.self) { try writer.finish() }
        #expect(throws: AgentProtocolError.self) { try FileTreeWriter(root: destination).data([1]) }
    }

    @Test func removalsDeleteFilesLinksAndEmptyDirectories() throws {
        let destination = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: destination) }
        try FileManager.default.createDirectory(atPath: destination + "/empty", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: destination + "/full", withIntermediateDirectories: true)
        try Data("x".utf8).write(to: URL(fileURLWithPath: destination + "/full/file"))
        try FileManager.default.createSymbolicLink(atPath: destination + "/link", withDestinationPath: "full")
        let writer = try FileTreeWriter(root: destination)
        for path in ["link", "empty", "full", "missing/nothing"] { try writer.remove(path) }
        let left = try FileManager.default.contentsOfDirectory(atPath: destination).sorted()
        #expect(left == ["full"])
        #expect(FileManager.default.fileExists(atPath: destination + "/full/file"), "a directory with contents stays")
    }
}
