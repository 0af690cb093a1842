import Hyper
import Synchronization

/// A simulated sandbox. The simulation runs when the caller waits, entirely on the virtual clock.
final class FakeSandbox: SandboxHandle {
    private struct State {
        var clock = VirtualClock()
        var generator: SeededGenerator
        var timeline: [PhaseEvent] = []
        var result: Result<SandboxExit, HyperError>?
        var pendingSignal: Int32?
    }

    let streams: StandardStreams
    private let spec: SandboxSpec
    private let faults: [PhaseFault]
    private let latency: LatencyModel
    private let state: Mutex<State>

    init(spec: SandboxSpec, options: LaunchOptions, latency: LatencyModel) {
        self.spec = spec
        self.streams = options.streams
        self.faults = options.faults
        self.latency = latency
        self.state = Mutex(State(generator: SeededGenerator(seed: options.seed)))
    }

    var timeline: [PhaseEvent] { state.withLock { $0.timeline } }

    func signal(_ number: Int32) throws(HyperError) {
        guard number > 0, number < 65 else { throw HyperError(.invalidArgument, "signal \(number) is not a valid signal number") }
        state.withLock { if $0.result == nil { $0.pendingSignal = number } }
    }

    func kill() throws(HyperError) { try signal(9) }

    func wait() throws(HyperError) -> SandboxExit {
        let result = state.withLock { state -> Result<SandboxExit, HyperError> in
            if let finished = state.result { return finished }
            let outcome = simulate(&state)
            state.result = outcome
            return outcome
        }
        return try result.get()
    }

    /// Runs the whole lifecycle on the virtual clock.
    private func simulate(_ state: inout State) -> Result<SandboxExit, HyperError> {
        let deadline = spec.limits.timeout.map { UInt64($0.nanoseconds) }
        for phase in SandboxPhase.allCases {
            let duration = latency.duration(of: phase, using: &state.generator)
            if let fault = faults.first(where: { $0.phase == phase }) {
                switch fault.kind {
                case .fail:
                    state.clock.advance(by: duration)
                    return .failure(HyperError(.phaseFailed, "sandbox failed during \(phase.step) (phase \(phase.flagName)): fault injected by the fake backend"))
                case .hang:
                    guard let deadline else {
                        return .failure(HyperError(.phaseFailed,
                                                   "sandbox hangs during \(phase.step) (phase \(phase.flagName)): fault injected by the fake backend, and no timeout is set to end it"))
                    }
                    state.clock.advance(to: deadline)
                    return .success(.timedOut)
                }
            }
            if phase == .exited {
                return .success(runCommand(&state, deadline: deadline, startupCost: duration))
            }
            state.clock.advance(by: duration)
            if let deadline, state.clock.now >= deadline {
                state.clock.advance(to: deadline)
                return .success(.timedOut)
            }
            state.timeline.append(PhaseEvent(phase: phase, nanoseconds: state.clock.now))
            if phase == .commandStarted, let signal = state.pendingSignal {
                state.timeline.append(PhaseEvent(phase: .exited, nanoseconds: state.clock.now))
                return .success(.signaled(signal))
            }
        }
        return .failure(HyperError(.phaseFailed, "the simulation ended without an exit phase"))
    }

    private func runCommand(_ state: inout State, deadline: UInt64?, startupCost: UInt64) -> SandboxExit {
        let commands = FakeCommands(spec: spec)
        let input = streams.input
        let result = commands.run(spec.command) {
            var collected: [UInt8] = []
            while let chunk = try? HostSystem.readSome(input), !chunk.isEmpty { collected += chunk }
            return collected
        }
        state.clock.advance(by: startupCost)
        let finish = state.clock.now &+ result.duration
        if let deadline, finish >= deadline {
            state.clock.advance(to: deadline)
            return .timedOut
        }
        // Output is delivered even when the reader has gone; a closed pipe is the caller's choice.
        try? HostSystem.writeAll(streams.output, result.output)
        try? HostSystem.writeAll(streams.error, result.errorOutput)
        state.clock.advance(to: finish)
        state.timeline.append(PhaseEvent(phase: .exited, nanoseconds: state.clock.now))
        return .exited(result.exitCode)
    }
}
