import Hyper

/// The flags that describe a sandbox spec, shared by every command that starts one.
enum SpecFlags {
    static let options: [OptionSpec] = [
        OptionSpec(["--spec"], value: "FILE", help: "Load the sandbox spec from a JSON file; flags override it"),
        OptionSpec(["--workspace", "-w"], value: "DIR", help: "Host directory mounted read-write at the same path (default: current directory)"),
        OptionSpec(["--mount"], value: "SRC:DST[:ro]", repeatable: true, help: "Bind-mount a host path into the sandbox"),
        OptionSpec(["--env", "-e"], value: "K=V", repeatable: true, help: "Set an environment variable (the environment is empty otherwise)"),
        OptionSpec(["--workdir"], value: "DIR", help: "Working directory inside the sandbox (default: the workspace)"),
        OptionSpec(["--net"], value: "none|allow:HOST[:PORT],...", help: "Network policy (default: none)"),
        OptionSpec(["--secret"], value: "NAME=file:PATH|env:VAR[@HOST,...]", repeatable: true, help: "Declare a secret: a file in /run/secrets, or with @HOST injected by the proxy (the sandbox sees a placeholder)"),
        OptionSpec(["--memory", "-m"], value: "SIZE", help: "Memory limit (64M, 2G)"),
        OptionSpec(["--cpus"], value: "N", help: "CPU limit"),
        OptionSpec(["--pids"], value: "N", help: "Process and thread limit"),
        OptionSpec(["--timeout"], value: "DUR", help: "Wall-clock limit (500ms, 30s, 5m); exit 124 when it passes"),
        OptionSpec(["--interactive", "-i"], help: "Forward stdin to the command"),
        OptionSpec(["--tty", "-t"], help: "Give the command a terminal"),
        OptionSpec(["--rootfs"], value: "DIR", help: "Take /usr, /bin, /lib... from this root tree instead of the host's"),
        OptionSpec(["--docker"], help: "Give the sandbox a private Docker daemon (kvm: the Docker flavour of the guest)"),
        OptionSpec(["--writable-hooks"], help: "Let the command write .git/hooks and .git/config in the workspace (unsafe)"),
    ]

    /// Builds the spec from `--spec` and the flags, flags last, then checks it against the host.
    /// - Parameter requiringCommand: false for `create`, whose commands come later with `exec`.
    static func makeSpec(_ arguments: ParsedArguments, context: CommandContext, requiringCommand: Bool = true) throws(HyperError) -> SandboxSpec {
        let cwd = context.currentDirectory
        var spec = SandboxSpec()
        if let file = arguments.value("--spec") {
            let path = SandboxSpec.absolute(file, base: cwd)
            let bytes: [UInt8]
            do {
                bytes = try HostSystem.readFile(path, limit: 1 << 20)
            } catch {
                throw HyperError(.invalidSpec, "spec: cannot read \(file): \(HostSystem.errorText(error.errorNumber))")
            }
            let folder = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
            spec = try SandboxSpec.decode(json: String(decoding: bytes, as: UTF8.self), baseDirectory: folder.isEmpty ? "/" : folder)
        }
        if let workspace = arguments.value("--workspace") {
            spec.workspace = SandboxSpec.absolute(workspace, base: cwd)
        } else if spec.workspace.isEmpty {
            spec.workspace = cwd
        }
        for text in arguments.all("--mount") {
            var mount = try Mount.parse(text)
            mount.source = SandboxSpec.absolute(mount.source, base: cwd)
            spec.mounts.append(mount)
        }
        for text in arguments.all("--env") { spec.setEnvironment(try EnvironmentVariable.parse(text)) }
        if let workdir = arguments.value("--workdir") { spec.workingDirectory = workdir }
        if let net = arguments.value("--net") { spec.network = try NetworkPolicy.parse(net) }
        for text in arguments.all("--secret") {
            var secret = try Secret.parse(text)
            if case let .file(path) = secret.source { secret.source = .file(SandboxSpec.absolute(path, base: cwd)) }
            spec.secrets.removeAll { $0.name == secret.name }
            spec.secrets.append(secret)
        }
        if let memory = arguments.value("--memory") { spec.limits.memoryBytes = try ResourceLimits.parseMemory(memory) }
        if let cpus = arguments.value("--cpus") { spec.limits.cpus = try ResourceLimits.parseCPUs(cpus) }
        if let pids = arguments.value("--pids") { spec.limits.pids = try ResourceLimits.parsePids(pids) }
        if let timeout = arguments.value("--timeout") { spec.limits.timeout = try ResourceLimits.parseTimeout(timeout) }
        if arguments.has("--interactive") { spec.interactive = true }
        if arguments.has("--tty") { spec.tty = true }
        if let rootfs = arguments.value("--rootfs") { spec.rootfs = SandboxSpec.absolute(rootfs, base: cwd) }
        if arguments.has("--docker") { spec.docker = true }
        if arguments.has("--writable-hooks") { spec.protectsHostExecutedFiles = false }
        if !arguments.positionals.isEmpty { spec.command = arguments.positionals }
        return try spec.validated(requiringCommand: requiringCommand)
    }
}
