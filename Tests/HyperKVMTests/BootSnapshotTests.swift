import Foundation
import Testing
@testable import Hyper
@testable import HyperKVM

/// The default start path's choices: which sandboxes restore the default guest's boot snapshot, which boot
/// cold and save one, and what happens to a cached snapshot that is not usable. No VM runs here.
@Suite("Boot snapshot cache and the kvm backend's start path")
struct BootSnapshotTests {
    /// A scratch folder with a fake guest kit (`kit/`) and an empty cache (`cache/`), removed at the end.
    final class Scratch {
        let root = NSTemporaryDirectory() + "hyperctl-boot-snapshots-\(UUID().uuidString)"
        var kitDirectory: String { root + "/kit" }
        var cache: BootSnapshotCache { BootSnapshotCache(directory: root + "/cache") }

        init() throws {
            try FileManager.default.createDirectory(atPath: kitDirectory, withIntermediateDirectories: true)
            try Data("kernel".utf8).write(to: URL(fileURLWithPath: kitDirectory + "/vmlinux"))
            try Data("initrd".utf8).write(to: URL(fileURLWithPath: kitDirectory + "/initramfs.cpio"))
        }

        deinit { try? FileManager.default.removeItem(atPath: root) }

        var kit: GuestKit { GuestKit(kernelPath: kitDirectory + "/vmlinux", initrdPath: kitDirectory + "/initramfs.cpio") }
        var backend: KVMBackend { KVMBackend(bootSnapshots: cache, kitDirectory: kitDirectory) }

        func key(memory: UInt64 = MicroVMSandbox.defaultMemory, vcpus: Int = 1, commandLine: String = MicroVMSandbox.kernelCommandLine) -> BootSnapshotCache.Key {
            BootSnapshotCache.Key(kit: kit, commandLine: commandLine, memoryBytes: memory, vcpus: vcpus)
        }

        /// Publishes an empty snapshot as `plan`'s (a staging folder, then its name), as a save would.
        func publishEmpty(_ plan: BootSnapshotPlan) throws {
            let staging = try cache.makeStagingFolder(for: plan.folder)
            try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: false)
            try cache.publish(staging, as: plan.folder, sources: plan.sources)
        }

        /// Puts a snapshot description (no machine files: nothing here restores it) where `key`'s snapshot goes.
        func placeSnapshot(for key: BootSnapshotCache.Key) throws -> String {
            let folder = try #require(cache.folder(for: key))
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            try SandboxSnapshot(memoryBytes: key.memoryBytes, vcpus: key.vcpus, dockerImage: nil, dockerImageBytes: 0, folder: folder).writeDescription()
            return folder
        }
    }

    func spec() -> SandboxSpec {
        var spec = SandboxSpec()
        spec.command = ["true"]
        return spec
    }

    func savePlan(of origin: MicroVMSandbox.Origin) -> BootSnapshotPlan? {
        if case let .boot(_, plan) = origin { return plan }
        return nil
    }

    @Test func theFolderNamesTheMachineAndChangesWithTheGuestOrTheMachine() throws {
        let scratch = try Scratch()
        let folder = try #require(scratch.cache.folder(for: scratch.key()))
        #expect(folder.hasPrefix(scratch.cache.directory + "/512m-1cpu-"))
        #expect(scratch.cache.folder(for: scratch.key()) == folder, "the same guest and machine: the same folder")
        #expect(scratch.cache.folder(for: scratch.key(memory: 1 << 30))?.hasPrefix(scratch.cache.directory + "/1024m-1cpu-") == true)
        #expect(scratch.cache.folder(for: scratch.key(vcpus: 2)) != folder)
        #expect(scratch.cache.folder(for: scratch.key(commandLine: "console=ttyS0")) != folder)
        // A rebuilt initramfs (written anew, even with the same bytes) is another guest.
        Thread.sleep(forTimeInterval: 0.01)
        try Data("initrd".utf8).write(to: URL(fileURLWithPath: scratch.kitDirectory + "/initramfs.cpio"))
        #expect(scratch.cache.folder(for: scratch.key()) != folder)
        var missing = scratch.key()
        missing.kit.kernelPath = scratch.root + "/no-such-kernel"
        #expect(scratch.cache.folder(for: missing) == nil, "a kit file that is not there is not cached")
    }

    @Test func theDockerFlavourHasBootSnapshotsOfItsOwnPerImageAndNetwork() throws {
        let scratch = try Scratch()
        let image = scratch.root + "/root.img"
        try Data("image".utf8).write(to: URL(fileURLWithPath: image))
        var docker = spec()
        docker.docker = true
        var proxied = docker
        proxied.network = .allow([])
        let plain = try #require(scratch.cache.folder(for: scratch.key()))
        let dockerKey = BootSnapshotCache.Key(kit: scratch.kit, commandLine: MicroVMSandbox.kernelCommandLine(for: docker),
                                              memoryBytes: MicroVMSandbox.defaultMemory, vcpus: 1, dockerImage: image)
        let folder = try #require(scratch.cache.folder(for: dockerKey))
        #expect(folder.hasPrefix(scratch.cache.directory + "/512m-1cpu-docker-") && folder != plain)
        var proxiedKey = dockerKey
        proxiedKey.commandLine = MicroVMSandbox.kernelCommandLine(for: proxied)
        #expect(proxiedKey.commandLine != dockerKey.commandLine && scratch.cache.folder(for: proxiedKey) != folder,
                "the daemon's proxy settings are on the command line: another snapshot")
        // A plain snapshot where a Docker one is expected (or the other way round) is not used.
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try SandboxSnapshot(memoryBytes: dockerKey.memoryBytes, vcpus: 1, dockerImage: nil, dockerImageBytes: 0, folder: folder).writeDescription()
        #expect(throws: HyperError.self) { try scratch.cache.snapshot(in: folder, for: dockerKey) }
        try SandboxSnapshot(memoryBytes: dockerKey.memoryBytes, vcpus: 1, dockerImage: image, dockerImageBytes: 5, folder: folder).writeDescription()
        #expect(try scratch.cache.snapshot(in: folder, for: dockerKey)?.dockerImage == image)
    }

    @Test func theFirstSandboxBootsColdAndSavesTheSnapshotTheNextOnesRestore() throws {
        let scratch = try Scratch()
        let first = try scratch.backend.origin(of: spec(), options: LaunchOptions())
        let plan = try #require(savePlan(of: first.origin))
        #expect(plan.folder == scratch.cache.folder(for: scratch.key()) && plan.replacing == nil && first.coldBoot == nil)

        let folder = try scratch.placeSnapshot(for: scratch.key())
        let next = try scratch.backend.origin(of: spec(), options: LaunchOptions())
        guard case let .snapshot(snapshot) = next.origin else {
            Issue.record("expected a restore, got \(next.origin)")
            return
        }
        #expect(snapshot.folder == folder && next.coldBoot?.plan.folder == folder)
    }

    @Test func coldBootOtherGuestsAndDisksTakeNoBootSnapshot() throws {
        let scratch = try Scratch()
        _ = try scratch.placeSnapshot(for: scratch.key())
        var cold = LaunchOptions()
        cold.coldBoot = true
        var kernel = LaunchOptions()
        kernel.kernelPath = scratch.kitDirectory + "/vmlinux"
        var disk = LaunchOptions()
        disk.disks = [DiskAttachment(path: scratch.kitDirectory + "/vmlinux", readOnly: true)]
        for (spec, options) in [(spec(), cold), (spec(), kernel), (spec(), disk)] {
            let start = try scratch.backend.origin(of: spec, options: options)
            guard case let .boot(_, plan) = start.origin else {
                Issue.record("expected a cold boot, got \(start.origin)")
                continue
            }
            #expect(plan == nil && start.coldBoot == nil)
        }
    }

    @Test func anUnusableCachedSnapshotIsRemovedAndMadeAgain() throws {
        let scratch = try Scratch()
        let folder = try #require(scratch.cache.folder(for: scratch.key()))
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try Data("{".utf8).write(to: URL(fileURLWithPath: folder + "/sandbox.json"))
        let start = try scratch.backend.origin(of: spec(), options: LaunchOptions())
        let plan = try #require(savePlan(of: start.origin))
        #expect(plan.folder == folder && plan.replacing?.contains("not a sandbox snapshot") == true)
        #expect(!FileManager.default.fileExists(atPath: folder))

        // One that reads but then fails to restore: removed, and the sandbox boots cold and saves anew.
        _ = try scratch.placeSnapshot(for: scratch.key())
        let restore = try scratch.backend.origin(of: spec(), options: LaunchOptions())
        var tried: [String] = []
        let used = try restore.launch { (origin) throws(HyperError) -> MicroVMSandbox.Origin in
            if case .snapshot = origin {
                tried.append("restore")
                throw HyperError(.invalidArgument, "its checksum does not match")
            }
            tried.append("boot")
            return origin
        }
        #expect(tried == ["restore", "boot"])
        #expect(savePlan(of: used)?.replacing == "its checksum does not match")
        #expect(!FileManager.default.fileExists(atPath: folder))
    }

    /// How many sandboxes `start` tries to build when every one fails for a reason of its own.
    func attemptsOfAFailingLaunch(_ start: KVMBackend.Start) -> Int {
        var attempts = 0
        #expect(throws: HyperError.self) {
            _ = try start.launch { (_) throws(HyperError) -> Int in
                attempts += 1
                throw HyperError(.invalidArgument, "--guest-console: cannot create it")
            }
        }
        return attempts
    }

    @Test func aSnapshotStaysWhenTheColdBootFailsToo() throws {
        let scratch = try Scratch()
        let folder = try scratch.placeSnapshot(for: scratch.key())
        let start = try scratch.backend.origin(of: spec(), options: LaunchOptions())
        #expect(attemptsOfAFailingLaunch(start) == 2, "the restore, then the cold boot")
        #expect(FileManager.default.fileExists(atPath: folder), "not the snapshot's fault: it stays")
    }

    @Test func aFailureOfAColdBootIsNotRetried() throws {
        let scratch = try Scratch()
        let start = try scratch.backend.origin(of: spec(), options: LaunchOptions())
        #expect(attemptsOfAFailingLaunch(start) == 1)
    }

    @Test func theFirstPublishedSnapshotStaysAndALaterOneIsDropped() throws {
        let scratch = try Scratch()
        let folder = try #require(scratch.cache.folder(for: scratch.key()))
        let first = try scratch.cache.makeStagingFolder(for: folder)
        let second = try scratch.cache.makeStagingFolder(for: folder)
        #expect(first != second)
        for (staging, text) in [(first, "first"), (second, "second")] {
            try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: false)
            try Data(text.utf8).write(to: URL(fileURLWithPath: staging + "/memory"))
        }
        let sources = try #require(scratch.cache.sources(for: scratch.key()))
        try scratch.cache.publish(first, as: folder, sources: sources)
        try scratch.cache.publish(second, as: folder, sources: sources)
        #expect(try String(contentsOfFile: folder + "/memory", encoding: .utf8) == "first")
        #expect(!FileManager.default.fileExists(atPath: first) && !FileManager.default.fileExists(atPath: second))
    }

    @Test func aSnapshotWhoseSourcesChangedIsPrunedWhenANewOneIsSaved() throws {
        let scratch = try Scratch()
        let oldPlan = try #require(scratch.cache.plan(for: scratch.key()))
        #expect(oldPlan.sources.map(\.path).suffix(2) == [scratch.kit.kernelPath, scratch.kit.initrdPath])
        try scratch.publishEmpty(oldPlan)
        let otherSize = try #require(scratch.cache.plan(for: scratch.key(memory: 1 << 30)))
        try scratch.publishEmpty(otherSize)
        #expect(FileManager.default.fileExists(atPath: oldPlan.folder), "another machine size of the same guest is not stale")

        // The kit's initramfs is rebuilt: both snapshots can never be used again, and a new save removes them.
        Thread.sleep(forTimeInterval: 0.01)
        try Data("initrd, rebuilt".utf8).write(to: URL(fileURLWithPath: scratch.kitDirectory + "/initramfs.cpio"))
        let newPlan = try #require(scratch.cache.plan(for: scratch.key()))
        #expect(newPlan.folder != oldPlan.folder)
        try scratch.publishEmpty(newPlan)
        #expect(FileManager.default.fileExists(atPath: newPlan.folder))
        #expect(!FileManager.default.fileExists(atPath: oldPlan.folder) && !FileManager.default.fileExists(atPath: otherSize.folder))
    }

    @Test func aStagingFolderWhoseWriterIsGoneIsSwept() throws {
        let scratch = try Scratch()
        let folder = try #require(scratch.cache.folder(for: scratch.key()))
        let mine = try scratch.cache.makeStagingFolder(for: folder)
        #expect(mine.hasPrefix(scratch.cache.directory + "/.staging-\(getpid())-"))
        try FileManager.default.createDirectory(atPath: mine, withIntermediateDirectories: false)
        // A pid above the kernel's largest (4194304) belongs to no process.
        let orphan = scratch.cache.directory + "/.staging-4194305-0123456789abcdef"
        try FileManager.default.createDirectory(atPath: orphan, withIntermediateDirectories: false)
        try Data("half".utf8).write(to: URL(fileURLWithPath: orphan + "/memory"))
        scratch.backend.sweepLeftovers()
        #expect(!FileManager.default.fileExists(atPath: orphan), "the crashed writer's folder is removed")
        #expect(FileManager.default.fileExists(atPath: mine), "a live writer's folder stays")
    }
}
