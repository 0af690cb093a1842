import HyperAgentProtocol

/// The Docker flavour of the microVM guest (`--docker`): the guest kit's kernel and agent boot a Debian
/// root with docker.io, and the agent starts a private containerd and dockerd in it before the first
/// command. Two virtio-blk disks carry it:
/// - the image `Scripts/docker-image.sh` builds, shared read-only by every sandbox (never copied);
/// - a scratch disk of the sandbox's own, a sparse file with no name that the guest formats and uses for the
///   overlay's writable layer and Docker's storage. It is gone when the sandbox's VMM process closes it.
///
/// See docs/docker.md.
public enum DockerFlavour {
    /// The scratch disk's size: room for images, containers and the root's changes. Sparse: a sandbox
    /// takes only what it writes.
    public static let scratchBytes: UInt64 = 16 << 30
    /// How long the guest may take to boot and have its daemon ready when the spec sets no timeout.
    public static let bootTimeout: Duration = .seconds(180)

    /// The image: `$HYPERCTL_DOCKER_IMAGE`, else `docker/root.img` in the cache.
    public static func defaultImagePath() -> String {
        if let path = HostSystem.environmentValue("HYPERCTL_DOCKER_IMAGE"), !path.isEmpty { return path }
        return GuestKit.cacheDirectory() + "/docker/root.img"
    }

    /// Where scratch files are made (on disk, not in memory): `$HYPERCTL_SCRATCH_DIR`, else `scratch` in the cache.
    public static func scratchDirectory() -> String {
        if let path = HostSystem.environmentValue("HYPERCTL_SCRATCH_DIR"), !path.isEmpty { return path }
        return GuestKit.cacheDirectory() + "/scratch"
    }

    /// The two disks of one sandbox: the shared image, read-only, and a new scratch disk, empty or with the
    /// contents of `scratchContents` (a snapshot's copy); the scratch disk's storage comes back too.
    static func disks(imagePath: String = defaultImagePath(), scratchDirectory folder: String = scratchDirectory(),
                      scratchContents: String? = nil) throws(HyperError) -> (devices: [VirtioBlock], scratch: FileBlockStorage) {
        // A regular file, or a block device (`other`).
        guard let kind = HostSystem.fileKind(at: imagePath), kind != .directory else {
            throw HyperError(.backendUnavailable, "--docker: no Docker image at \(imagePath): build it with Scripts/docker-image.sh (a few minutes), or set HYPERCTL_DOCKER_IMAGE")
        }
        let base: FileBlockStorage
        do { base = try FileBlockStorage(path: imagePath, writable: false) } catch { throw HyperError(.backendUnavailable, "--docker: \(error.message)") }
        let scratch: FileBlockStorage
        do {
            try HostSystem.makeDirectories(folder)
            scratch = FileBlockStorage(descriptor: try HostSystem.createAnonymousFile(in: folder, size: scratchBytes), size: scratchBytes)
            if let scratchContents {
                let source = try HostSystem.openFile(scratchContents, writable: false)
                defer { HostSystem.closeDescriptor(source.descriptor) }
                try HostSystem.copyData(from: source.descriptor, to: scratch.descriptor, size: min(source.size, scratchBytes))
            }
        } catch {
            throw HyperError(.hostFailure, "--docker: the scratch disk: \(error)")
        }
        return ([VirtioBlock(storage: base, readOnly: true, identifier: DockerFlavourContract.imageSerial),
                 VirtioBlock(storage: scratch, readOnly: false, identifier: DockerFlavourContract.scratchSerial)], scratch)
    }

    /// The kernel command-line words for a sandbox, with the proxy's port when it has one.
    static func commandLineWords(proxyPort: UInt16?) -> String {
        " " + DockerFlavourContract.commandLineWord + (proxyPort.map { " \(DockerFlavourContract.proxyWordPrefix)\($0)" } ?? "")
    }
}
