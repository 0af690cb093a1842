import HyperAgentProtocol

/// One command in a microVM's guest, under the id its agent knows it by; the handle a session's caller
/// waits on, signals or kills. The sandbox's session thread starts it and reports its end.
final class GuestCommand: SandboxHandle, @unchecked Sendable {
    let id: UInt32
    let streams: StandardStreams
    let request: AgentExec
    private let launchTime = HostSystem.monotonicNanoseconds()
    private let done: HostEvent
    private let result = Locked<Result<SandboxExit, HyperError>?>(nil)
    private let events = Locked<[PhaseEvent]>([])
    /// Where its signal and resize requests go (to the session thread, which keeps them in order with the exec).
    private let deliver: @Sendable (MicroVMSandbox.Request) -> Void

    init(id: UInt32, streams: StandardStreams, request: AgentExec, deliver: @escaping @Sendable (MicroVMSandbox.Request) -> Void) throws(HyperError) {
        self.id = id
        self.streams = streams
        self.request = request
        self.deliver = deliver
        done = try HostEvent()
    }

    var timeline: [PhaseEvent] { events.value }

    /// Records a phase of the command.
    func record(_ phase: SandboxPhase) {
        let now = HostSystem.monotonicNanoseconds()
        events.withLock { $0.append(PhaseEvent(phase: phase, nanoseconds: now > launchTime ? now - launchTime : 0)) }
    }

    /// Sets how the command ended (the first report wins) and wakes its waiters.
    func finish(_ outcome: Result<SandboxExit, HyperError>) {
        let first = result.withLock { held in
            guard held == nil else { return false }
            held = outcome
            return true
        }
        if first {
            if case .success = outcome { record(.exited) }
            done.signal()
        }
    }

    var isFinished: Bool { result.value != nil }

    func wait() throws(HyperError) -> SandboxExit {
        while HostSystem.waitReadable([done.descriptor], milliseconds: -1) != [true] {}
        guard let outcome = result.value else { throw HyperError(.phaseFailed, "command \(id) ended without a result") }
        return try outcome.get()
    }

    /// SIGWINCH becomes a resize to the size of the caller's terminal; other signals go to the command.
    func signal(_ number: Int32) throws(HyperError) {
        guard !isFinished else { return }
        if number == MicroVMSandbox.windowChange {
            if request.tty, let size = HostSystem.windowSize(streams.input) { deliver(.resize(id, rows: size.rows, columns: size.columns)) }
            return
        }
        deliver(.signal(id, number))
    }

    func kill() throws(HyperError) { try signal(9) }
}
