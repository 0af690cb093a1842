import Hyper
import Synchronization

/// A fake accelerator that replays a script of guest accesses instead of running guest code.
///
/// Device models, the bus and the boot sequence are written against `Hypervisor`; this lets their tests drive
/// them through the same calls a real vCPU loop makes, with no KVM, including accesses no well-behaved guest
/// would make (odd sizes, unmapped ports, addresses past the end of memory).
public struct ScriptedHypervisor: Hypervisor {
    /// One guest action.
    public enum Step: Equatable, Sendable {
        case portWrite(port: UInt16, size: Int, value: UInt64)
        case portRead(port: UInt16, size: Int)
        case mmioWrite(address: UInt64, size: Int, value: UInt64)
        case mmioRead(address: UInt64, size: Int)
        /// The accelerator reports this exit.
        case exit(VMExit)
    }

    /// What the script observed: every value the guest read, every interrupt-line change, the registers set.
    public final class Recording: Sendable {
        private let state = Mutex<(reads: [UInt64], interrupts: [(UInt32, Bool)], registers: X86Registers?, special: X86SpecialRegisters?)>(([], [], nil, nil))

        /// Creates an empty recording.
        public init() {}

        /// Values returned to the guest's reads, in order.
        public var reads: [UInt64] { state.withLock { $0.reads } }
        /// Interrupt-line changes, in order.
        public var interrupts: [(line: UInt32, active: Bool)] { state.withLock { $0.interrupts.map { (line: $0.0, active: $0.1) } } }
        /// The general registers the boot code set.
        public var registers: X86Registers? { state.withLock { $0.registers } }
        /// The special registers the boot code set.
        public var specialRegisters: X86SpecialRegisters? { state.withLock { $0.special } }

        func read(_ value: UInt64) { state.withLock { $0.reads.append(value) } }
        func interrupt(_ line: UInt32, _ active: Bool) { state.withLock { $0.interrupts.append((line, active)) } }
        func set(_ registers: X86Registers) { state.withLock { $0.registers = registers } }
        func set(_ registers: X86SpecialRegisters) { state.withLock { $0.special = registers } }
    }

    /// The steps vCPU 0 performs.
    public let script: [Step]
    /// Where observations go.
    public let recording: Recording

    /// Creates a scripted accelerator.
    public init(script: [Step], recording: Recording = Recording()) {
        self.script = script
        self.recording = recording
    }

    public func makeVirtualMachine(memory: GuestMemory) throws(HyperError) -> any VirtualMachine {
        ScriptedMachine(memory: memory, script: script, recording: recording)
    }
}

final class ScriptedMachine: VirtualMachine {
    let memory: GuestMemory
    let script: [ScriptedHypervisor.Step]
    let recording: ScriptedHypervisor.Recording

    init(memory: GuestMemory, script: [ScriptedHypervisor.Step], recording: ScriptedHypervisor.Recording) {
        self.memory = memory
        self.script = script
        self.recording = recording
    }

    func makeVCPU(index: Int) throws(HyperError) -> any VirtualCPU {
        ScriptedVCPU(script: index == 0 ? script : [], recording: recording)
    }

    func setInterruptLine(_ line: UInt32, active: Bool) throws(HyperError) {
        recording.interrupt(line, active)
    }
}

final class ScriptedVCPU: VirtualCPU {
    private let script: [ScriptedHypervisor.Step]
    private let recording: ScriptedHypervisor.Recording
    private var general = X86Registers()
    private var special = X86SpecialRegisters()
    private let stopRequested = Atomic<Bool>(false)

    init(script: [ScriptedHypervisor.Step], recording: ScriptedHypervisor.Recording) {
        self.script = script
        self.recording = recording
    }

    func registers() throws(HyperError) -> X86Registers { general }
    func setRegisters(_ registers: X86Registers) throws(HyperError) {
        general = registers
        recording.set(registers)
    }
    func specialRegisters() throws(HyperError) -> X86SpecialRegisters { special }
    func setSpecialRegisters(_ registers: X86SpecialRegisters) throws(HyperError) {
        special = registers
        recording.set(registers)
    }

    /// Replays the script; a script that runs out ends like a guest halted for good.
    func requestStop() { stopRequested.store(true, ordering: .relaxed) }

    func run(bus: MachineBus, deadline: UInt64?) throws(HyperError) -> VMExit {
        for step in script {
            if stopRequested.exchange(false, ordering: .relaxed) { return .stopped }
            switch step {
            case let .portWrite(port, size, value): bus.writePort(port, size: size, value: value)
            case let .portRead(port, size): recording.read(bus.readPort(port, size: size))
            case let .mmioWrite(address, size, value): bus.writeMemory(address, size: size, value: value)
            case let .mmioRead(address, size): recording.read(bus.readMemory(address, size: size))
            case let .exit(exit): return exit
            }
            if let requested = bus.requestedExit { return requested }
        }
        return .halt
    }
}
