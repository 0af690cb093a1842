import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Hyper
import HyperKVM
import Testing
@testable import hyperctl

@Suite("Cold-start benchmark")
struct BenchTests {
    @Test func quantilesInterpolateBetweenRanks() {
        let figures = RowFigures(milliseconds: [5, 1, 4, 2, 3], peakResidentKiB: 10)
        #expect(figures.minimum == 1 && figures.maximum == 5 && figures.median == 3)
        #expect(abs(figures.p90 - 4.6) < 1e-9)
        #expect(RowFigures(milliseconds: [7], peakResidentKiB: nil).p90 == 7)
        #expect(RowFigures(milliseconds: [1, 2], peakResidentKiB: nil).median == 1.5)
    }

    static let sample = ColdStartResults(
        host: [("cpu", .string("test cpu"))], runs: 3, warmup: 1, baseline: "bwrap",
        rows: [
            .init(name: "process", kind: .backend, figures: RowFigures(milliseconds: [4, 5, 6], peakResidentKiB: 5000)),
            .init(name: "kvm", kind: .backend, figures: nil, skipReason: "not accelerated <here> & now"),
            .init(name: "bwrap", kind: .peer, figures: RowFigures(milliseconds: [4, 4, 4], peakResidentKiB: 2000)),
        ])

    @Test func tableJSONAndChartAgree() throws {
        let results = Self.sample
        #expect(results.table.contains("process") && results.table.contains("1.25"))
        #expect(results.table.contains("kvm                 skipped: not accelerated"))
        let json = results.json
        guard case let .array(rows)? = json["results"] else {
            Issue.record("no results array")
            return
        }
        #expect(json["host"]?["cpu"] == .string("test cpu"))
        #expect(rows.count == 3)
        #expect(rows[0]["median_ms"] == .number(5) && rows[0]["ratio_to_baseline"] == .number(1.25))
        #expect(rows[1]["skipped"] == .string("not accelerated <here> & now"))
        // The chart is well-formed XML with one bar per measured row.
        let svg = results.svg
        let parser = XMLParser(data: Data(svg.utf8))
        #expect(parser.parse(), "the SVG is not well-formed XML")
        #expect(svg.components(separatedBy: "<rect x=").count - 1 == 2)
    }

    @Test func acceleratedHostsGetTheLinuxRowsOrSayWhatIsMissing() throws {
        var facts = KVMHostFacts()
        facts.deviceExists = true
        facts.apiVersion = 12
        facts.extensions = Set(KVMExtension.allCases)
        facts.hardwareVirtualizationFlag = "vmx"
        let accelerated = facts
        let registry = BackendRegistry([KVMBackend(facts: { accelerated })])
        let plan = try ColdStartPlan(hyperctl: "/usr/bin/hyperctl", registry: registry, backends: ["kvm"], peers: ["qemu-microvm-linux"])
        defer { plan.cleanUp() }
        for row in plan.rows where row.name != "true" {
            if let arguments = row.arguments {
                #expect(row.name == "kvm" ? arguments.contains("--report") : arguments.contains { $0.hasSuffix("initramfs.cpio") })
            } else {
                #expect(row.skipReason?.contains("guest kit") == true || row.skipReason?.contains("qemu") == true, "\(row)")
            }
        }
        let qemu = ColdStartPlan.qemuLinuxArguments(qemu: "/usr/bin/qemu", kit: GuestKit(kernelPath: "/k/vmlinux", initrdPath: "/k/initramfs.cpio"))
        #expect(qemu.contains("/k/vmlinux") && qemu.contains("/k/initramfs.cpio") && qemu.contains("virtconsole,chardev=agent"))
        #expect(qemu.contains { $0.hasSuffix("hyper.benchmark=ready-reset") && $0.hasPrefix(MicroVMSandbox.kernelCommandLine) })
    }

    @Test(arguments: [
        (["bench"], "the benchmark to run is cold-start"),
        (["bench", "cold-start", "--runs", "0"], "--runs: \"0\""),
        (["bench", "cold-start", "--backends", "kvm,xen"], "unknown row \"xen\""),
        (["bench", "cold-start", "--peers", "runc"], "unknown row \"runc\""),
    ])
    func badArgumentsAre125(arguments: [String], message: String) {
        let result = runInProcess(arguments)
        #expect(result.exitCode == 125)
        #expect(result.errorOutput.contains(message))
    }

    @Test(.enabled(if: hyperctlBinaryExists, "needs the hyperctl binary built beside the tests"))
    func aSmallRunWritesEveryOutput() throws {
        let folder = NSTemporaryDirectory() + "hyperctl-bench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let result = runInProcess(["bench", "cold-start", "--runs", "2", "--warmup", "0", "--backends", "fake,kvm,kvm-cold-boot", "--peers", "none",
                                   "--hyperctl", hyperctlBinary, "--json", folder + "/out.json", "--plot", folder + "/out.svg"])
        #expect(result.exitCode == 0, "\(result.errorOutput)")
        let json = try JSONValue.parse(try String(contentsOfFile: folder + "/out.json", encoding: .utf8))
        guard case let .array(rows)? = json["results"] else {
            Issue.record("no results")
            return
        }
        #expect(rows.compactMap { $0["backend"] } == [.string("fake"), .string("kvm"), .string("kvm-agent-ready"), .string("kvm-cold-boot"),
                                                      .string("kvm-cold-boot-agent-ready"), .string("true")])
        #expect(rows[0]["runs"] == .number(2))
        if KVMHostFacts.gather().hardwareVirtualizationFlag == nil {
            #expect(rows[1]["skipped"] != nil, "kvm is skipped, with the reason, where it is not accelerated")
        }
        #expect(result.output.contains("medians of 2 interleaved runs"))
        #expect(XMLParser(data: try Data(contentsOf: URL(fileURLWithPath: folder + "/out.svg"))).parse())
    }
}

/// Whether this process may open /dev/kvm read-write (a tiny guest runs even without acceleration).
let kvmUsableForBench = access("/dev/kvm", R_OK | W_OK) == 0

@Suite("Snapshot benchmark", .serialized, .enabled(if: kvmUsableForBench, "needs read-write access to /dev/kvm"))
struct SnapshotBenchTests {
    @Test func restoredAndColdTinyGuestsAreTimedAndTheirMemoryMeasured() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let result = runInProcess(["bench", "snapshot", "--runs", "3", "--warmup", "1", "--json", "snap.json"], directory: directory)
        #expect(result.exitCode == 0, "stderr: \(result.errorOutput)")
        #expect(result.output.contains("snapshot restore  median") && result.output.contains("ratio"))
        let document = try JSONValue.parse(String(contentsOfFile: directory + "/snap.json", encoding: .utf8))
        let snapshot = document["snapshot"]
        #expect(snapshot?["coldBoot"]?["runs"] == .integer(3) && snapshot?["restore"]?["runs"] == .integer(3))
        guard case let .number(ratio)? = snapshot?["restoreToColdRatio"] else {
            Issue.record("no ratio")
            return
        }
        #expect(ratio > 0)
        guard case let .number(coldKiB)? = snapshot?["coldBootsMemory"]?["residentKiB"] else {
            Issue.record("no memory figures")
            return
        }
        #expect(coldKiB > 0)  // Ten live machines take memory: a zero would mean the measurement is broken.
        #expect(document["host"]?["cpu"] != nil)
    }

    @Test func coldStartOptionsAreRefused() {
        let result = runInProcess(["bench", "snapshot", "--peers", "none"])
        #expect(result.exitCode == 125 && result.errorOutput.contains("--peers applies to bench cold-start"))
        let guest = runInProcess(["bench", "snapshot", "--guest", "windows"])
        #expect(guest.exitCode == 125 && guest.errorOutput.contains("--guest: \"windows\" is not a guest"))
        let coldStart = runInProcess(["bench", "cold-start", "--guest", "kit"])
        #expect(coldStart.exitCode == 125 && coldStart.errorOutput.contains("--guest applies to bench snapshot"))
    }

    @Test(.enabled(if: KVMHostFacts.gather().hardwareVirtualizationFlag == nil, "checks the refusal on a host without hardware virtualization"))
    func theGuestKitBenchNeedsHardwareVirtualization() {
        let result = runInProcess(["bench", "snapshot", "--guest", "kit", "--runs", "1"])
        #expect(result.exitCode == 125 && result.errorOutput.contains("not hardware-accelerated"), "\(result.errorOutput)")
    }
}
