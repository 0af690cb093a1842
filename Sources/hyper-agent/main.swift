// hyper-agent: PID 1 of a hyperctl sandbox VM. It sets up the guest, says it is ready on the control
// channel, and serves the host (see docs/guest-protocol.md).
import CHyperAgent
import Glibc
import HyperAgentProtocol

let agentStart = GuestSystem.uptimeNanoseconds()

/// Says why the agent cannot go on, on the serial console the host keeps, and resets the guest.
func fail(_ message: String) -> Never {
    let console = GuestSystem.open("/dev/console", O_WRONLY | O_NOCTTY)
    _ = GuestSystem.writeAll(console >= 0 ? console : 2, Array("hyper-agent: \(message)\n".utf8))
    chyper_agent_power_off()
}

do {
    try GuestSetup.mountAll()
    GuestSetup.openStandardStreams()
    try GuestSetup.loadModules()
    let commandLine = GuestSetup.kernelCommandLine()
    var docker: DockerDaemon?
    if commandLine.contains(DockerFlavourContract.commandLineWord) {
        try DockerRoot.assemble(kernelRelease: GuestSetup.kernelRelease())
        let prefix = DockerFlavourContract.proxyWordPrefix
        let proxyPort = commandLine.first { $0.hasPrefix(prefix) }.flatMap { UInt16($0.dropFirst(prefix.count)) }
        docker = try DockerDaemon(proxyPort: proxyPort)
    }
    let signals = chyper_agent_child_signal_fd()
    guard signals >= 0 else { throw AgentError.system("watch child processes", errno) }
    let channel = try GuestSetup.openChannel()
    let agent = Agent(channel: channel, childSignals: signals, docker: docker)
    agent.send(.ready(AgentReady(kernelRelease: GuestSetup.kernelRelease(), agentStartNanoseconds: agentStart,
                                 readyNanoseconds: GuestSystem.uptimeNanoseconds())))
    // For benchmarks that boot this guest in another VMM: reset as soon as the agent is ready.
    if commandLine.contains(GuestSetup.resetWhenReady) { chyper_agent_power_off() }
    agent.serve()
} catch {
    fail("\(error)")
}
