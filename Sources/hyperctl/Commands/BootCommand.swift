import Hyper

/// `hyperctl boot`: boots a raw VM from a kernel image with its serial console on stdout.
enum BootCommand: CLICommand {
    static let name = "boot"
    static let abstract = "Boot a kernel in a raw VM with the serial console on stdout"
    static let usage = "boot --backend kvm --kernel FILE [--initrd FILE] [--cmdline S] [--memory SIZE] [--cpus N] [--timeout DUR]"
    static let options: [OptionSpec] = [
        OptionSpec(["--backend"], value: "NAME", help: "The VM backend (default: kvm)"),
        OptionSpec(["--kernel"], value: "FILE", help: "A PVH ELF or a bzImage; builtin:hello is a tiny guest that prints and resets"),
        OptionSpec(["--export-kernel"], value: "FILE", help: "Write the kernel image to FILE instead of booting (for comparisons with other VMMs)"),
        OptionSpec(["--initrd"], value: "FILE", help: "An initramfs"),
        OptionSpec(["--cmdline"], value: "S", help: "The kernel command line (default: console=ttyS0)"),
        OptionSpec(["--memory", "-m"], value: "SIZE", help: "Guest memory (default 256M)"),
        OptionSpec(["--cpus"], value: "N", help: "vCPUs (default 1)"),
        OptionSpec(["--timeout"], value: "DUR", help: "Wall-clock limit; exit 124 when it passes"),
    ]
    static let discussion = "Exit codes: 0 when the guest resets or powers off; 124 on timeout; 125 on a bad image or a VM failure."
    /// The built-in tiny guest's name.
    static let builtinHello = "builtin:hello"

    static func run(_ arguments: ParsedArguments, context: CommandContext) throws(HyperError) -> Int32 {
        guard arguments.positionals.isEmpty else {
            throw HyperError(.invalidArgument, "boot takes no positional arguments (got \"\(arguments.positionals[0])\")")
        }
        guard let kernel = arguments.value("--kernel") else { throw HyperError(.invalidArgument, "boot needs --kernel FILE") }
        var request = BootRequest(kernelPath: SandboxSpec.absolute(kernel, base: context.currentDirectory))
        if kernel == Self.builtinHello {
            request.kernelPath = kernel
            request.kernelImage = TinyGuest.serialHelloImage()
        } else if HostSystem.fileKind(at: request.kernelPath) != .regularFile {
            throw HyperError(.invalidArgument, "--kernel: \(kernel) is not a readable file")
        }
        if let export = arguments.value("--export-kernel") {
            let image: [UInt8]
            do {
                if let builtin = request.kernelImage { image = builtin } else { image = try HostSystem.readFile(request.kernelPath, limit: 512 << 20) }
                try HostSystem.writeFile(SandboxSpec.absolute(export, base: context.currentDirectory), image)
            } catch {
                throw HyperError(.hostFailure, "--export-kernel: \(error)")
            }
            return 0
        }
        if let initrd = arguments.value("--initrd") {
            request.initrdPath = SandboxSpec.absolute(initrd, base: context.currentDirectory)
            guard HostSystem.fileKind(at: request.initrdPath ?? "") == .regularFile else {
                throw HyperError(.invalidArgument, "--initrd: \(initrd) is not a readable file")
            }
        }
        if let cmdline = arguments.value("--cmdline") { request.commandLine = cmdline }
        if let memory = arguments.value("--memory") { request.memoryBytes = try ResourceLimits.parseMemory(memory) }
        if let cpus = arguments.value("--cpus") {
            guard let count = Int(cpus), (1...64).contains(count) else {
                throw HyperError(.invalidArgument, "--cpus: \"\(cpus)\" is not a whole number of vCPUs from 1 to 64")
            }
            request.cpus = count
        }
        if let timeout = arguments.value("--timeout") { request.timeout = try ResourceLimits.parseTimeout(timeout) }
        request.consoleOutput = context.streams.output
        let backend = try context.registry.select(arguments.value("--backend") ?? "kvm").backend
        return try backend.boot(request).exitCode
    }
}
