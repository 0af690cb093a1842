#if os(Linux)
import Glibc
import Hyper
import Synchronization

/// A running namespace sandbox: the helper process on the host, and the status lines it reports.
final class ProcessSandbox: SandboxHandle {
    private struct State {
        var timeline: [PhaseEvent] = []
        var result: Result<SandboxExit, HyperError>?
        var lifeline: Int32
        var statusReader: Int32
        var reaped = false
        /// Status bytes read but not yet a whole line.
        var pendingStatus: [UInt8] = []
        /// What the status lines said so far.
        var outcome: Result<SandboxExit, HyperError>?
        var started = false
        /// A session's init, as a host pid.
        var initPid: Int32?
    }

    let streams: StandardStreams
    private let helper: pid_t
    private let launchStart: UInt64
    private let state: Mutex<State>
    /// Serializes waiters; held while one thread reads the helper's status lines.
    private let waiting = Mutex(())

    /// The egress proxy, for a sandbox with a network allowlist.
    private let egress: EgressProxyHandle?

    init(helper: pid_t, statusReader: Int32, lifeline: Int32, streams: StandardStreams, launchStart: UInt64, egress: EgressProxyHandle? = nil) {
        self.egress = egress
        self.helper = helper
        self.streams = streams
        self.launchStart = launchStart
        self.state = Mutex(State(lifeline: lifeline, statusReader: statusReader))
    }

    deinit {
        egress?.stop()
        // Closing the lifeline makes the helper kill whatever is left and clean up.
        let (lifeline, reader, reaped) = state.withLock { ($0.lifeline, $0.statusReader, $0.reaped) }
        ProcessSystem.closeQuietly(lifeline)
        ProcessSystem.closeQuietly(reader)
        if !reaped { _ = ProcessSystem.reap(helper) }
    }

    var timeline: [PhaseEvent] { state.withLock { $0.timeline } }

    /// Every egress decision, for the report.
    var reportDetails: [(String, JSONValue)] {
        guard let egress else { return [] }
        return [("egress", .array(egress.proxy.decisions.map(\.summary)))]
    }

    func signal(_ number: Int32) throws(HyperError) {
        guard number > 0, number < 65 else { throw HyperError(.invalidArgument, "signal \(number) is not a valid signal number") }
        if number == SIGKILL { return try kill() }
        let finished = state.withLock { $0.result != nil }
        if !finished, !ProcessSystem.send(number, to: helper) {
            throw ProcessError.systemCall(operation: "signal the sandbox", errorNumber: errno).hyperError
        }
    }

    func kill() throws(HyperError) {
        state.withLock { state in
            ProcessSystem.closeQuietly(state.lifeline)
            state.lifeline = -1
        }
    }

    /// For a session: reads status lines until its init runs, and returns the init's host pid.
    func waitUntilStarted() throws(HyperError) -> Int32 {
        let result = waiting.withLock { _ -> Result<Int32, HyperError> in
            readStatus { $0.started || $0.outcome != nil }
            let (started, initPid, outcome) = state.withLock { ($0.started, $0.initPid, $0.outcome) }
            if started, let initPid { return .success(initPid) }
            if case let .failure(error)? = outcome { return .failure(error) }
            return .failure(ProcessError.setupFailed("the session sandbox ended before it was ready").hyperError)
        }
        return try result.get()
    }

    func wait() throws(HyperError) -> SandboxExit {
        let result = waiting.withLock { _ -> Result<SandboxExit, HyperError> in
            if let finished = state.withLock({ $0.result }) { return finished }
            readStatus { _ in false }
            let outcome = state.withLock { $0.outcome } ?? .failure(ProcessError.setupFailed("the helper ended without a status").hyperError)
            state.withLock { state in
                state.result = outcome
                ProcessSystem.closeQuietly(state.statusReader)
                ProcessSystem.closeQuietly(state.lifeline)
                state.statusReader = -1
                state.lifeline = -1
            }
            _ = ProcessSystem.reap(helper)
            state.withLock { $0.reaped = true }
            egress?.stop()
            return outcome
        }
        return try result.get()
    }

    /// Reads the helper's status lines, recording phases and the outcome, until `done` holds or the helper
    /// closes the pipe.
    private func readStatus(until done: (State) -> Bool) {
        let reader = state.withLock { $0.statusReader }
        while !state.withLock({ done($0) }) {
            guard let chunk = try? HostSystem.readSome(reader, count: 4096), !chunk.isEmpty else { return }
            let lines = state.withLock { state -> [String] in
                state.pendingStatus += chunk
                var lines: [String] = []
                while let newline = state.pendingStatus.firstIndex(of: UInt8(ascii: "\n")) {
                    lines.append(String(decoding: state.pendingStatus[..<newline], as: UTF8.self))
                    state.pendingStatus.removeSubrange(...newline)
                }
                return lines
            }
            for line in lines {
                var outcome = state.withLock { $0.outcome }
                if outcome == nil || line.hasPrefix("error ") == false { handle(line, outcome: &outcome) }
                state.withLock { $0.outcome = outcome }
            }
        }
    }

    private func handle(_ line: String, outcome: inout Result<SandboxExit, HyperError>?) {
        let words = line.split(separator: " ", maxSplits: 1).map(String.init)
        guard let word = words.first else { return }
        let argument = words.count > 1 ? words[1] : ""
        let now = HostSystem.monotonicNanoseconds()
        func record(_ phase: SandboxPhase, at instant: UInt64) {
            let relative = instant >= launchStart ? instant - launchStart : 0
            state.withLock { $0.timeline.append(PhaseEvent(phase: phase, nanoseconds: relative)) }
        }
        switch word {
        case "created":
            record(.created, at: UInt64(argument) ?? now)
        case "started":
            record(.commandStarted, at: UInt64(argument) ?? now)
            state.withLock { $0.started = true }
        case "init":
            state.withLock { $0.initPid = Int32(argument) }
        case "exited":
            record(.exited, at: now)
            outcome = .success(.exited(Int32(argument) ?? 125))
        case "signaled":
            record(.exited, at: now)
            outcome = .success(.signaled(Int32(argument) ?? SIGKILL))
        case "timeout":
            outcome = .success(.timedOut)
        case "error":
            outcome = .failure(ProcessError.setupFailed(argument).hyperError)
        default:
            break
        }
    }
}
#endif
