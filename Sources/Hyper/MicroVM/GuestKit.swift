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

    /// Where the kit lives: `$HYPERCTL_GUEST_KIT`, else `guest` in the cache (`cacheDirectory`).
    public static func defaultDirectory() -> String {
        if let kit = HostSystem.environmentValue("HYPERCTL_GUEST_KIT"), !kit.isEmpty { return kit }
        return cacheDirectory() + "/guest"
    }

    /// hyperctl's cache, where the guest-kit scripts put what they build: `$HYPERCTL_CACHE`, else
    /// `$XDG_CACHE_HOME/hyperctl`, else `~/.cache/hyperctl`.
    public static func cacheDirectory() -> String {
        if let cache = HostSystem.environmentValue("HYPERCTL_CACHE"), !cache.isEmpty { return cache }
        if let cache = HostSystem.environmentValue("XDG_CACHE_HOME"), !cache.isEmpty { return cache + "/hyperctl" }
        return (HostSystem.environmentValue("HOME") ?? "/root") + "/.cache/hyperctl"
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
