/// An accelerator that runs virtual machines: KVM today; Hypervisor.framework or Windows Hypervisor Platform
/// would implement the same three protocols, and every device, loader and the boot sequence above them is
/// written once against these protocols.
public protocol Hypervisor: Sendable {
    /// Creates a virtual machine with its guest memory mapped at guest-physical address 0.
    func makeVirtualMachine(memory: GuestMemory) throws(HyperError) -> any VirtualMachine
}

/// One virtual machine: its memory, its interrupt lines and its vCPUs.
public protocol VirtualMachine: AnyObject {
    /// The guest's RAM.
    var memory: GuestMemory { get }
    /// Creates vCPU number `index`.
    func makeVCPU(index: Int) throws(HyperError) -> any VirtualCPU
    /// Raises or lowers an interrupt line of the (in-kernel, where the accelerator has one) interrupt controller.
    func setInterruptLine(_ line: UInt32, active: Bool) throws(HyperError)
    /// Returns a trigger that pulses an edge-triggered line from any thread (KVM: an irqfd).
    func makeInterruptTrigger(line: UInt32) throws(HyperError) -> any InterruptTrigger
    /// The VM's state outside memory and vCPUs (interrupt controllers, timers, clock), for a snapshot.
    func saveState() throws(HyperError) -> AcceleratorState
    /// Puts a saved VM state back.
    func restoreState(_ state: AcceleratorState) throws(HyperError)
}

/// Pulses one edge-triggered interrupt line; safe to call from any thread.
public protocol InterruptTrigger: AnyObject, Sendable {
    /// Delivers one interrupt.
    func fire()
}

/// A trigger that pulses the line through `setInterruptLine`, for accelerators without a faster path.
public final class LineInterruptTrigger: InterruptTrigger, @unchecked Sendable {
    private let machine: any VirtualMachine
    private let line: UInt32

    /// Creates a trigger for `line` of `machine`.
    public init(machine: any VirtualMachine, line: UInt32) {
        self.machine = machine
        self.line = line
    }

    public func fire() {
        try? machine.setInterruptLine(line, active: true)
        try? machine.setInterruptLine(line, active: false)
    }
}

extension VirtualMachine {
    public func makeInterruptTrigger(line: UInt32) throws(HyperError) -> any InterruptTrigger {
        LineInterruptTrigger(machine: self, line: line)
    }
}

/// One virtual CPU. Its state moves in and out as plain values, so it can be saved and restored.
public protocol VirtualCPU: AnyObject {
    /// Reads the general-purpose registers.
    func registers() throws(HyperError) -> X86Registers
    /// Writes the general-purpose registers.
    func setRegisters(_ registers: X86Registers) throws(HyperError)
    /// Reads the segment, control and descriptor-table registers.
    func specialRegisters() throws(HyperError) -> X86SpecialRegisters
    /// Writes the segment, control and descriptor-table registers.
    func setSpecialRegisters(_ registers: X86SpecialRegisters) throws(HyperError)
    /// Runs the guest until an exit that the bus cannot handle by itself. Port IO and MMIO are dispatched to
    /// `bus` inside; only halts, shutdowns, resets, timeouts and failures come back.
    /// - Parameter deadline: a `HostSystem.monotonicNanoseconds()` instant after which the run ends `.timedOut`.
    func run(bus: MachineBus, deadline: UInt64?) throws(HyperError) -> VMExit
    /// Makes the current `run` (or the next one) return `.stopped` soon; the request is used up by that
    /// return, so a later `run` goes on. Safe to call from any thread.
    func requestStop()
    /// The vCPU's whole state, for a snapshot; call it only while the vCPU is not running.
    func saveState() throws(HyperError) -> AcceleratorState
    /// Puts a saved state back (into a vCPU of a machine made the same way).
    func restoreState(_ state: AcceleratorState) throws(HyperError)
}

/// State an accelerator keeps for a vCPU or a VM, as bytes only that accelerator reads back: a snapshot
/// holds it as a plain value, and restoring it anywhere else is refused.
public struct AcceleratorState: Equatable, Sendable {
    /// The accelerator that wrote it (`kvm`).
    public var accelerator: String
    public var bytes: [UInt8]

    /// Creates a state.
    public init(accelerator: String, bytes: [UInt8]) {
        self.accelerator = accelerator
        self.bytes = bytes
    }
}

extension VirtualCPU {
    public func saveState() throws(HyperError) -> AcceleratorState {
        throw HyperError(.notImplemented, "this accelerator cannot save a vCPU's state")
    }

    public func restoreState(_ state: AcceleratorState) throws(HyperError) {
        throw HyperError(.notImplemented, "this accelerator cannot restore a vCPU's state")
    }
}

extension VirtualMachine {
    public func saveState() throws(HyperError) -> AcceleratorState {
        throw HyperError(.notImplemented, "this accelerator cannot save a VM's state")
    }

    public func restoreState(_ state: AcceleratorState) throws(HyperError) {
        throw HyperError(.notImplemented, "this accelerator cannot restore a VM's state")
    }
}

/// Why a vCPU stopped running.
public enum VMExit: Equatable, Sendable {
    /// The guest executed HLT with interrupts it will never get.
    case halt
    /// The guest asked to reset the machine (i8042 0xFE, or the accelerator's reset event).
    case reset
    /// The guest powered the machine off.
    case powerOff
    /// The CPU shut down: a triple fault.
    case shutdown(rip: UInt64)
    /// The wall-clock deadline passed.
    case timedOut
    /// Another thread asked the vCPU to stop (`requestStop`).
    case stopped
    /// The accelerator could not go on: an emulation failure, a failed VM entry, an unknown exit.
    case failure(reason: String, rip: UInt64)
}

/// The general-purpose registers of an x86-64 vCPU.
public struct X86Registers: Equatable, Sendable {
    public var rax: UInt64 = 0, rbx: UInt64 = 0, rcx: UInt64 = 0, rdx: UInt64 = 0
    public var rsi: UInt64 = 0, rdi: UInt64 = 0, rsp: UInt64 = 0, rbp: UInt64 = 0
    public var r8: UInt64 = 0, r9: UInt64 = 0, r10: UInt64 = 0, r11: UInt64 = 0
    public var r12: UInt64 = 0, r13: UInt64 = 0, r14: UInt64 = 0, r15: UInt64 = 0
    public var rip: UInt64 = 0
    /// Bit 1 is reserved and always set.
    public var rflags: UInt64 = 0x2

    /// Creates zeroed registers.
    public init() {}
}

/// A segment register as the accelerator sees it (selector and hidden descriptor cache).
public struct X86Segment: Equatable, Sendable {
    public var base: UInt64 = 0
    public var limit: UInt32 = 0
    public var selector: UInt16 = 0
    public var type: UInt8 = 0
    public var present = false
    public var dpl: UInt8 = 0
    /// Default operation size (D/B bit): 32-bit code or stack.
    public var defaultSize32 = false
    /// 64-bit code segment (L bit).
    public var long = false
    public var granularity = false
    /// S bit: code or data rather than a system segment.
    public var codeOrData = true
    public var unusable = false

    /// Creates a null segment.
    public init() {}

    /// A flat 4 GiB code or data segment for protected or long mode.
    public static func flat(selector: UInt16, type: UInt8, long: Bool = false) -> X86Segment {
        var segment = X86Segment()
        segment.selector = selector
        segment.type = type
        segment.limit = 0xFFFF_FFFF
        segment.present = true
        segment.granularity = true
        segment.long = long
        segment.defaultSize32 = !long
        return segment
    }
}

/// A descriptor-table register (GDTR, IDTR).
public struct X86DescriptorTable: Equatable, Sendable {
    public var base: UInt64 = 0
    public var limit: UInt16 = 0

    /// Creates a table register.
    public init(base: UInt64 = 0, limit: UInt16 = 0) {
        self.base = base
        self.limit = limit
    }
}

/// The segment, control and descriptor-table registers of an x86-64 vCPU.
public struct X86SpecialRegisters: Equatable, Sendable {
    public var cs = X86Segment(), ds = X86Segment(), es = X86Segment(), fs = X86Segment()
    public var gs = X86Segment(), ss = X86Segment(), tr = X86Segment(), ldt = X86Segment()
    public var gdt = X86DescriptorTable(), idt = X86DescriptorTable()
    public var cr0: UInt64 = 0, cr2: UInt64 = 0, cr3: UInt64 = 0, cr4: UInt64 = 0, cr8: UInt64 = 0
    public var efer: UInt64 = 0
    public var apicBase: UInt64 = 0

    /// Creates zeroed registers.
    public init() {}
}
