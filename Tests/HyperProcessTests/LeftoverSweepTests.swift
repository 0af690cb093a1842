import Foundation
import Testing
@testable import HyperProcess

@Suite("Leftovers of crashed sandboxes")
struct LeftoverSweepTests {
    @Test func onlyObjectsOfProcessesThatAreGoneAreRemoved() throws {
        let root = NSTemporaryDirectory() + "hyperctl-sweep-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let live = getpid()
        let gone: Int32 = 999_999_999  // Above any pid_max.
        let paths = ["tmp/hyperctl-egress-sandbox-\(gone)-12", "tmp/hyperctl-egress-sandbox-\(live)-34", "tmp/hyperctl-egress-other",
                     "cg/hyperctl/sandbox-\(gone)-56", "cg/hyperctl/sandbox-\(live)-78", "cg/memory/hyperctl-sandbox-\(gone)-90",
                     "cg/memory/hyperctl-sandbox-\(live)-91", "cg/memory/unrelated"]
        for path in paths { try FileManager.default.createDirectory(atPath: root + "/" + path, withIntermediateDirectories: true) }
        let removed = LeftoverSweep.run(cgroupRoot: root + "/cg", temporaryRoot: root + "/tmp").sorted()
        #expect(removed == [root + "/cg/hyperctl/sandbox-\(gone)-56", root + "/cg/memory/hyperctl-sandbox-\(gone)-90",
                            root + "/tmp/hyperctl-egress-sandbox-\(gone)-12"])
        for path in paths {
            #expect(FileManager.default.fileExists(atPath: root + "/" + path) == !path.contains("\(gone)"), "\(path)")
        }
        #expect(LeftoverSweep.ownerPid("sandbox-12-34") == 12 && LeftoverSweep.ownerPid("sandbox-x-1") == nil && LeftoverSweep.ownerPid("other") == nil)
    }
}
