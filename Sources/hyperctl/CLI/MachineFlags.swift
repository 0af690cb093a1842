import Hyper

/// The flags that shape a microVM rather than the sandbox's spec, shared by `run`, `create` and `supervise`.
enum MachineFlags {
    static let options: [OptionSpec] = [
        OptionSpec(["--allow-unaccelerated"], help: "Let kvm run on a host without hardware virtualization (very slow)"),
        OptionSpec(["--kernel"], value: "FILE", help: "kvm: the guest kernel (bzImage or PVH ELF) instead of the guest kit's"),
        OptionSpec(["--initrd"], value: "FILE", help: "kvm: the guest initramfs instead of the guest kit's"),
        OptionSpec(["--guest-console"], value: "FILE", help: "kvm: copy the guest's serial console to FILE"),
        OptionSpec(["--disk"], value: "FILE[:ro]", repeatable: true, help: "kvm: attach a disk image as /dev/vda, /dev/vdb..."),
        OptionSpec(["--from-snapshot"], value: "DIR", help: "kvm: restore the sandbox from a snapshot folder (hyperctl snapshot) instead of booting"),
        OptionSpec(["--cold-boot"], help: "kvm: boot the guest kernel even when its boot snapshot could be restored (the default start path)"),
    ]

    /// Puts the flags into `options`, with paths made absolute against `directory`.
    static func apply(_ arguments: ParsedArguments, directory: String, to options: inout LaunchOptions) throws(HyperError) {
        options.allowUnaccelerated = arguments.has("--allow-unaccelerated")
        options.kernelPath = arguments.value("--kernel").map { SandboxSpec.absolute($0, base: directory) }
        options.initrdPath = arguments.value("--initrd").map { SandboxSpec.absolute($0, base: directory) }
        options.guestConsolePath = arguments.value("--guest-console").map { SandboxSpec.absolute($0, base: directory) }
        for text in arguments.all("--disk") { options.disks.append(try DiskAttachment.parse(text, base: directory)) }
        options.snapshotPath = arguments.value("--from-snapshot").map { SandboxSpec.absolute($0, base: directory) }
        options.coldBoot = arguments.has("--cold-boot")
        if options.snapshotPath != nil, let flag = ["--kernel", "--initrd", "--disk", "--cold-boot"].first(where: { arguments.has($0) }) {
            throw HyperError(.invalidArgument, "\(flag) does not go with --from-snapshot: the snapshot holds the guest")
        }
    }

    /// Refuses the microVM flags for a backend that runs no guest kernel.
    static func check(_ arguments: ParsedArguments, backend: any Backend) throws(HyperError) {
        let given = ["--kernel", "--initrd", "--guest-console", "--disk", "--from-snapshot", "--cold-boot"].filter { arguments.has($0) }
        if backend.isolation != .hardwareVM, let flag = given.first {
            throw HyperError(.invalidArgument, "\(flag) applies to microVM backends (kvm); backend \(backend.name) runs no guest kernel")
        }
    }

    /// The same options as arguments again (absolute paths), for a process started on the caller's behalf.
    static func arguments(for options: LaunchOptions) -> [String] {
        var list: [String] = options.allowUnaccelerated ? ["--allow-unaccelerated"] : []
        if let kernel = options.kernelPath { list += ["--kernel", kernel] }
        if let initrd = options.initrdPath { list += ["--initrd", initrd] }
        if let console = options.guestConsolePath { list += ["--guest-console", console] }
        for disk in options.disks { list += ["--disk", disk.path + (disk.readOnly ? ":ro" : "")] }
        if let snapshot = options.snapshotPath { list += ["--from-snapshot", snapshot] }
        if options.coldBoot { list.append("--cold-boot") }
        return list
    }
}
