/// A microVM kept up for many commands (`hyperctl create --backend kvm`): the guest boots once, takes the
/// workspace, and runs each `exec` as a command of its agent, several at once. Stopping it sends SIGTERM to
/// every command, SIGKILL after the grace period, copies the workspace back and powers the guest off.
public final class MicroVMSession: SessionSandbox, @unchecked Sendable {
    private let sandbox: MicroVMSandbox

    /// Boots (or restores) `spec`'s microVM in session mode and returns once its agent has the workspace.
    public init(spec: SandboxSpec, options: LaunchOptions, origin: MicroVMSandbox.Origin, hypervisor: any Hypervisor, bootTimeout: Duration) throws(HyperError) {
        sandbox = try MicroVMSandbox(spec: spec, options: options, origin: origin, hypervisor: hypervisor, bootTimeout: bootTimeout, isSession: true)
        do {
            try sandbox.waitUntilReady()
        } catch {
            try? sandbox.kill()
            _ = try? sandbox.wait()
            throw error
        }
    }

    public func exec(_ command: SessionCommand, streams: StandardStreams) throws(HyperError) -> any SandboxHandle {
        try sandbox.execute(command, streams: streams)
    }

    public func snapshot(to folder: String) throws(HyperError) { try sandbox.snapshot(to: folder) }

    public func stop(grace: Duration) {
        sandbox.requestStop(grace: grace)
        waitUntilEnded()
    }

    public func waitUntilEnded() { _ = try? sandbox.wait() }

    public var hasTimedOut: Bool { sandbox.hasEnded && (try? sandbox.wait()) == .timedOut }

    /// The supervisor's resident memory: the VMM and the guest memory it has touched.
    public var memoryInUse: UInt64? {
        guard let status = HostSystem.readText("/proc/self/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ UInt64($0) }) else { return nil }
        return kilobytes * 1024
    }
}
