/// The microVM sandbox's default start path: snapshots of the default guest taken at agent-ready, kept in
/// hyperctl's cache (`snapshots/`), one per guest image, machine size and hyperctl build.
///
/// The first sandbox of a kind boots cold and, once its agent says `ready` and before it learns anything of
/// its own (identity, setup, workspace), writes its machine here; later sandboxes of that kind are restored
/// from it and get their identity as a booted one would. Anything that changes the guest or the machine
/// (another kernel or initramfs file, memory size, vCPU count, command line, hyperctl binary) gives another
/// folder, so a stale snapshot is never used, and it is removed once a new one is saved (`pruneStale`).
/// The folder may be deleted at any time. See docs/snapshots.md.
public struct BootSnapshotCache: Sendable {
    /// The folder that holds the snapshots.
    public let directory: String

    /// The cache in `directory` (by default `snapshots` in hyperctl's cache).
    public init(directory: String = GuestKit.cacheDirectory() + "/snapshots") {
        self.directory = directory
    }

    /// What a boot snapshot is of: the guest's files, the machine and the program that runs it.
    public struct Key: Equatable, Sendable {
        public var kit: GuestKit
        public var commandLine: String
        public var memoryBytes: UInt64
        public var vcpus: Int
        /// The Docker flavour's image, for a Docker sandbox.
        public var dockerImage: String?

        /// Creates a key.
        public init(kit: GuestKit, commandLine: String, memoryBytes: UInt64, vcpus: Int, dockerImage: String? = nil) {
            self.kit = kit
            self.commandLine = commandLine
            self.memoryBytes = memoryBytes
            self.vcpus = vcpus
            self.dockerImage = dockerImage
        }
    }

    /// A file a boot snapshot is made from, and its stamp (`HostSystem.fileStamp`) when it was.
    public struct Source: Equatable, Sendable {
        public var path: String
        public var stamp: String
    }

    /// The files `key`'s snapshot is made from: hyperctl's executable, the kit's kernel and initramfs, and the
    /// Docker image. Nil when one cannot be identified (the snapshot is then not cached).
    public func sources(for key: Key) -> [Source]? {
        guard let program = HostSystem.executablePath() else { return nil }
        var sources: [Source] = []
        for path in [program, key.kit.kernelPath, key.kit.initrdPath] + (key.dockerImage.map { [$0] } ?? []) {
            guard let stamp = HostSystem.fileStamp(path) else { return nil }
            sources.append(Source(path: path, stamp: stamp))
        }
        return sources
    }

    /// The snapshot folder for `key`: `<memory MiB>m-<vCPUs>cpu[-docker]-<digest>`, where the digest covers the
    /// sources (their identity on disk, not their contents), the command line, the size and hyperctl's
    /// release. Nil when a source cannot be identified.
    public func folder(for key: Key) -> String? {
        sources(for: key).map { folder(for: key, sources: $0) }
    }

    func folder(for key: Key, sources: [Source]) -> String {
        let identity = [HyperRelease.version, key.commandLine, String(key.memoryBytes), String(key.vcpus)] + sources.flatMap { [$0.path, $0.stamp] }
        let kind = key.dockerImage == nil ? "" : "-docker"
        return directory + "/\(key.memoryBytes >> 20)m-\(key.vcpus)cpu\(kind)-" + Self.digest(identity.joined(separator: "\n"))
    }

    /// The plan for a cold boot that saves `key`'s snapshot, or nil when it cannot be cached.
    public func plan(for key: Key) -> BootSnapshotPlan? {
        guard let sources = sources(for: key) else { return nil }
        return BootSnapshotPlan(cache: self, folder: folder(for: key, sources: sources), sources: sources)
    }

    /// The snapshot in `folder`: nil when there is none yet; an error when what is there is not usable (not
    /// a complete snapshot, or not of this machine's size).
    public func snapshot(in folder: String, for key: Key) throws(HyperError) -> SandboxSnapshot? {
        guard HostSystem.fileKind(at: folder) != nil else { return nil }
        let snapshot = try SandboxSnapshot.read(from: folder)
        guard snapshot.memoryBytes == key.memoryBytes, snapshot.vcpus == key.vcpus, snapshot.dockerImage == key.dockerImage else {
            throw HyperError(.invalidArgument, "boot snapshot \(folder) is of another machine")
        }
        return snapshot
    }

    static let stagingPrefix = ".staging-"
    /// The file in each boot snapshot that lists its sources, a line each: the stamp, a tab, the path.
    static let sourcesFile = "sources"

    /// A new, private folder beside the snapshots to write one into before `publish` names it:
    /// `.staging-<pid>-<random>`, so that what a crashed writer left is found and removed.
    func makeStagingFolder(for folder: String) throws(HyperError) -> String {
        do {
            try HostSystem.makeDirectories(directory, mode: 0o700)
        } catch {
            throw HyperError(.hostFailure, "the boot snapshot cache: \(error)")
        }
        sweepStaging()
        let suffix = (try? HostRandom().hex(bytes: 8)) ?? String(HostSystem.monotonicNanoseconds())
        return directory + "/" + Self.stagingPrefix + "\(HostSystem.processID)-" + suffix
    }

    /// Removes staging folders whose writer is gone (it crashed or was killed while saving).
    public func sweepStaging() {
        for name in HostSystem.directoryNames(directory) where name.hasPrefix(Self.stagingPrefix) {
            guard let pid = name.dropFirst(Self.stagingPrefix.count).split(separator: "-").first.flatMap({ Int32($0) }),
                  HostSystem.processStartTicks(pid) == nil else { continue }
            HostSystem.removeTree(directory + "/" + name)
        }
    }

    /// Gives a written staging folder its name, with the list of its sources. When another sandbox published
    /// the same snapshot first, its copy stays and this one is dropped. Then snapshots that can never be used
    /// again are removed.
    func publish(_ staging: String, as folder: String, sources: [Source]) throws(HyperError) {
        do {
            try HostSystem.writeFile(staging + "/" + Self.sourcesFile, Array(sources.map { "\($0.stamp)\t\($0.path)\n" }.joined().utf8))
            try HostSystem.renameItem(staging, to: folder)
        } catch {
            HostSystem.removeTree(staging)
            guard HostSystem.fileKind(at: folder) == .directory else { throw HyperError(.hostFailure, "the boot snapshot cache: \(error)") }
        }
        pruneStale()
    }

    /// Removes boot snapshots that can never be used again: a file they were made from (a kit file, the
    /// Docker image, the hyperctl executable that made them) has changed since, or is gone.
    public func pruneStale() {
        for name in HostSystem.directoryNames(directory) where !name.hasPrefix(Self.stagingPrefix) {
            let folder = directory + "/" + name
            guard let text = HostSystem.readText(folder + "/" + Self.sourcesFile) else { continue }
            let stale = text.split(separator: "\n").contains { (line: Substring) -> Bool in
                let fields = line.split(separator: "\t", maxSplits: 1)
                guard fields.count == 2 else { return false }
                return HostSystem.fileStamp(String(fields[1])) != String(fields[0])
            }
            if stale { HostSystem.removeTree(folder) }
        }
    }

    /// Removes a cached snapshot that was refused, so that the next cold boot writes it anew.
    public func discard(_ folder: String) {
        guard folder.hasPrefix(directory + "/") else { return }
        HostSystem.removeTree(folder)
    }

    /// 64-bit FNV-1a of the text, as 16 hex digits: a name, not a defence (the folder is the user's own).
    static func digest(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01B3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

/// Where a cold boot writes its machine at agent-ready for the sandboxes after it (the default start path),
/// and why a cached snapshot was not used, if one was refused.
public struct BootSnapshotPlan: Sendable {
    public var cache: BootSnapshotCache
    public var folder: String
    /// The files the snapshot is made from, as they were when the sandbox started.
    public var sources: [BootSnapshotCache.Source]
    /// The refusal of the snapshot that was in `folder`, for the report.
    public var replacing: String?

    /// Creates a plan.
    public init(cache: BootSnapshotCache, folder: String, sources: [BootSnapshotCache.Source], replacing: String? = nil) {
        self.cache = cache
        self.folder = folder
        self.sources = sources
        self.replacing = replacing
    }
}
