import Hyper

/// `hyperctl snapshot`: writes a running kvm sandbox to a snapshot folder, which `create --from-snapshot`
/// and `run --from-snapshot` restore, as many times as wanted.
enum SnapshotCommand: CLICommand {
    static let name = "snapshot"
    static let abstract = "Write a running kvm sandbox to a snapshot folder, for restores and clones"
    static let usage = "snapshot NAME --to DIR [--stop]"
    static let options: [OptionSpec] = [
        OptionSpec(["--to"], value: "DIR", help: "The snapshot folder to create (it must not exist)"),
        OptionSpec(["--stop"], help: "Stop the sandbox after the snapshot (it goes on otherwise)"),
    ]
    static let discussion = """
    The sandbox is paused between commands (none may be running), written out (its memory sparse, the
    state of its vCPUs, VM and devices, and the Docker flavour's scratch disk), and resumed. A sandbox with
    a network allowlist, secrets or --disk cannot be snapshotted: its clones would share them. Each restore
    gets its own hostname, fresh entropy and the current time. The folder holds the guest's memory in the
    clear: keep it as private as the sandbox. See docs/snapshots.md.
    """

    static func run(_ arguments: ParsedArguments, context: CommandContext) throws(HyperError) -> Int32 {
        guard arguments.positionals.count == 1, let name = arguments.positionals.first else {
            throw HyperError(.invalidArgument, "snapshot: give one sandbox name (hyperctl snapshot NAME --to DIR)")
        }
        guard let target = arguments.value("--to") else { throw HyperError(.invalidArgument, "snapshot needs --to DIR, the folder to write") }
        try SessionStore.validateName(name)
        let folder = SandboxSpec.absolute(target, base: context.currentDirectory)
        guard HostSystem.fileKind(at: folder) == nil else { throw HyperError(.invalidArgument, "--to: \(target) exists already") }
        let client = SessionCLI.client()
        guard client.exists(name) else { throw HyperError(.invalidArgument, "no sandbox named \(name) (hyperctl ps lists them)") }
        try client.snapshot(name, to: folder)
        if arguments.has("--stop") { try client.stop(name, grace: SessionSupervisor.defaultGrace) }
        context.print(folder + "\n")
        return 0
    }
}
