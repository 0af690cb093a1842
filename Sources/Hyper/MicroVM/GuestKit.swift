/// The default guest of microVM sandboxes: a kernel and an initramfs that `Scripts/guest-kit.sh` builds
/// from Debian packages into a cache, with the guest agent as /init.
public struct GuestKit: Equatable, Sendable {
    public var kernelPath: String
    public var initrdPath: String

    /// Creates a kit from explicit files.
    public init(kernelPath: String, initrdPath: String) {
        self.kernelPath = kernelPath
        self.initrdPath = initrdPath
    }

    /// Where the kit lives: `$HYPERCTL_GUEST_KIT`, else `$HYPERCTL_CACHE/guest`, else
    /// `$XDG_CACHE_HOME/hyperctl/guest`, else `~/.cache/hyperctl/guest`.
    public static func defaultDirectory() -> String {
        if let kit = HostSystem.environmentValue("HYPERCTL_GUEST_KIT"), !kit.isEmpty { return kit }
        if let cache = HostSystem.environmentValue("HYPERCTL_CACHE"), !cache.isEmpty { return cache + "/guest" }
        if let cache = HostSystem.environmentValue("XDG_CACHE_HOME"), !cache.isEmpty { return cache + "/hyperctl/guest" }
        return (HostSystem.environmentValue("HOME") ?? "/root") + "/.cache/hyperctl/guest"
    }

    /// The kit in `directory`, or an error that says how to build it. The kernel is the uncompressed
    /// `vmlinux` (PVH entry, no decompressor to run) when the kit has one, else the bzImage `vmlinuz`.
    public static func locate(in directory: String = defaultDirectory()) throws(HyperError) -> GuestKit {
        let uncompressed = directory + "/vmlinux"
        let kernel = HostSystem.fileKind(at: uncompressed) == .regularFile ? uncompressed : directory + "/vmlinuz"
        let kit = GuestKit(kernelPath: kernel, initrdPath: directory + "/initramfs.cpio")
        guard HostSystem.fileKind(at: kit.kernelPath) == .regularFile, HostSystem.fileKind(at: kit.initrdPath) == .regularFile else {
            throw HyperError(.backendUnavailable, "no guest kit in \(directory): build it with Scripts/guest-kit.sh, or pass --kernel and --initrd")
        }
        return kit
    }
}
