#if os(Linux)
import CHyperKVM
import Glibc
import Hyper
import Synchronization

/// One KVM vCPU: its descriptor and its shared `kvm_run` area.
final class KVMVirtualCPU: VirtualCPU, @unchecked Sendable {
    private let machine: KVMVirtualMachine
    private let descriptor: Int32
    /// The host address of the mmap'd `kvm_run` area, kept as an integer; `runArea` makes the pointer.
    private let runAreaAddress: UInt
    private let runAreaSize: Int
    /// Set by `requestStop`; the thread inside `run` (0 when none) is kicked out of KVM_RUN.
    private let stopRequested = Atomic<Bool>(false)
    private let runningThread = Atomic<Int32>(0)

    // KVM exit reasons (include/uapi/linux/kvm.h).
    static let exitIO: UInt32 = 2, exitHalt: UInt32 = 5, exitMMIO: UInt32 = 6, exitShutdown: UInt32 = 8
    static let exitFailEntry: UInt32 = 9, exitInterrupted: UInt32 = 10, exitInternalError: UInt32 = 17
    static let exitSystemEvent: UInt32 = 24

    init(machine: KVMVirtualMachine, index: Int) throws(KVMError) {
        self.machine = machine
        descriptor = try KVMSystem.ioctl(machine.descriptor, chyper_KVM_CREATE_VCPU(), value: UInt(index), operation: "KVM_CREATE_VCPU")
        runAreaSize = machine.runAreaSize
        // SAFETY: maps the vCPU's run area with the size KVM reported; the result is checked before use.
        let area = unsafe mmap(nil, runAreaSize, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0)
        let address = UInt(bitPattern: area)
        // SAFETY: comparing the returned pointer with MAP_FAILED reads no memory.
        guard address != 0, unsafe area != MAP_FAILED else {
            let number = errno
            close(descriptor)
            throw KVMError.systemCall(operation: "mmap the vCPU run area", errorNumber: number)
        }
        runAreaAddress = address
        // CPUID comes before any register or MSR that depends on it. (Fully initialized here: on failure,
        // deinit unmaps the run area and closes the descriptor.)
        guard chyper_configure_cpuid(machine.systemDescriptor, descriptor, UInt32(index)) == 0 else {
            throw KVMError.systemCall(operation: "KVM_SET_CPUID2", errorNumber: errno)
        }
        // Then the MSRs that depend on it, and the local APIC's LINT0/LINT1 routing.
        let accepted = chyper_set_boot_msrs(descriptor)
        guard accepted == chyper_boot_msr_count() else {
            throw KVMError.systemCall(operation: "KVM_SET_MSRS (accepted \(max(accepted, 0)) of \(chyper_boot_msr_count()))",
                                      errorNumber: accepted < 0 ? errno : EINVAL)
        }
        guard chyper_configure_lint(descriptor) == 0 else {
            throw KVMError.systemCall(operation: "KVM_SET_LAPIC", errorNumber: errno)
        }
    }

    deinit {
        // SAFETY: the run area was mapped in init with this size and is not used after deinit.
        _ = unsafe munmap(UnsafeMutableRawPointer(bitPattern: runAreaAddress), runAreaSize)
        close(descriptor)
    }

    /// The shared run area. KVM fills it on every exit; we only read the fields of the current exit.
    private var runArea: UnsafeMutablePointer<kvm_run> {
        // SAFETY: runAreaAddress is a live mapping of at least sizeof(kvm_run) bytes for this object's lifetime.
        unsafe UnsafeMutablePointer<kvm_run>(bitPattern: runAreaAddress)!
    }

    func registers() throws(HyperError) -> X86Registers {
        var raw = kvm_regs()
        try wrap { () throws(KVMError) in try KVMSystem.ioctl(descriptor, chyper_KVM_GET_REGS(), pointingTo: &raw, operation: "KVM_GET_REGS") }
        var registers = X86Registers()
        registers.rax = raw.rax; registers.rbx = raw.rbx; registers.rcx = raw.rcx; registers.rdx = raw.rdx
        registers.rsi = raw.rsi; registers.rdi = raw.rdi; registers.rsp = raw.rsp; registers.rbp = raw.rbp
        registers.r8 = raw.r8; registers.r9 = raw.r9; registers.r10 = raw.r10; registers.r11 = raw.r11
        registers.r12 = raw.r12; registers.r13 = raw.r13; registers.r14 = raw.r14; registers.r15 = raw.r15
        registers.rip = raw.rip
        registers.rflags = raw.rflags
        return registers
    }

    func setRegisters(_ registers: X86Registers) throws(HyperError) {
        var raw = kvm_regs()
        raw.rax = registers.rax; raw.rbx = registers.rbx; raw.rcx = registers.rcx; raw.rdx = registers.rdx
        raw.rsi = registers.rsi; raw.rdi = registers.rdi; raw.rsp = registers.rsp; raw.rbp = registers.rbp
        raw.r8 = registers.r8; raw.r9 = registers.r9; raw.r10 = registers.r10; raw.r11 = registers.r11
        raw.r12 = registers.r12; raw.r13 = registers.r13; raw.r14 = registers.r14; raw.r15 = registers.r15
        raw.rip = registers.rip
        raw.rflags = registers.rflags
        try wrap { () throws(KVMError) in try KVMSystem.ioctl(descriptor, chyper_KVM_SET_REGS(), pointingTo: &raw, operation: "KVM_SET_REGS") }
    }

    func specialRegisters() throws(HyperError) -> X86SpecialRegisters {
        var raw = kvm_sregs()
        try wrap { () throws(KVMError) in try KVMSystem.ioctl(descriptor, chyper_KVM_GET_SREGS(), pointingTo: &raw, operation: "KVM_GET_SREGS") }
        var registers = X86SpecialRegisters()
        registers.cs = Self.segment(raw.cs); registers.ds = Self.segment(raw.ds); registers.es = Self.segment(raw.es)
        registers.fs = Self.segment(raw.fs); registers.gs = Self.segment(raw.gs); registers.ss = Self.segment(raw.ss)
        registers.tr = Self.segment(raw.tr); registers.ldt = Self.segment(raw.ldt)
        registers.gdt = X86DescriptorTable(base: raw.gdt.base, limit: raw.gdt.limit)
        registers.idt = X86DescriptorTable(base: raw.idt.base, limit: raw.idt.limit)
        registers.cr0 = raw.cr0; registers.cr2 = raw.cr2; registers.cr3 = raw.cr3; registers.cr4 = raw.cr4; registers.cr8 = raw.cr8
        registers.efer = raw.efer
        registers.apicBase = raw.apic_base
        return registers
    }

    func setSpecialRegisters(_ registers: X86SpecialRegisters) throws(HyperError) {
        // Start from KVM's current values so fields we do not model (the interrupt bitmap) stay consistent.
        var raw = kvm_sregs()
        try wrap { () throws(KVMError) in try KVMSystem.ioctl(descriptor, chyper_KVM_GET_SREGS(), pointingTo: &raw, operation: "KVM_GET_SREGS") }
        raw.cs = Self.segment(registers.cs); raw.ds = Self.segment(registers.ds); raw.es = Self.segment(registers.es)
        raw.fs = Self.segment(registers.fs); raw.gs = Self.segment(registers.gs); raw.ss = Self.segment(registers.ss)
        raw.tr = Self.segment(registers.tr); raw.ldt = Self.segment(registers.ldt)
        raw.gdt.base = registers.gdt.base; raw.gdt.limit = registers.gdt.limit
        raw.idt.base = registers.idt.base; raw.idt.limit = registers.idt.limit
        raw.cr0 = registers.cr0; raw.cr2 = registers.cr2; raw.cr3 = registers.cr3; raw.cr4 = registers.cr4; raw.cr8 = registers.cr8
        raw.efer = registers.efer
        if registers.apicBase != 0 { raw.apic_base = registers.apicBase }
        try wrap { () throws(KVMError) in try KVMSystem.ioctl(descriptor, chyper_KVM_SET_SREGS(), pointingTo: &raw, operation: "KVM_SET_SREGS") }
    }

    static func segment(_ raw: kvm_segment) -> X86Segment {
        var segment = X86Segment()
        segment.base = raw.base; segment.limit = raw.limit; segment.selector = raw.selector; segment.type = raw.type
        segment.present = raw.present != 0; segment.dpl = raw.dpl; segment.defaultSize32 = raw.db != 0
        segment.codeOrData = raw.s != 0; segment.long = raw.l != 0; segment.granularity = raw.g != 0
        segment.unusable = raw.unusable != 0
        return segment
    }

    static func segment(_ segment: X86Segment) -> kvm_segment {
        var raw = kvm_segment()
        raw.base = segment.base; raw.limit = segment.limit; raw.selector = segment.selector; raw.type = segment.type
        raw.present = segment.present ? 1 : 0; raw.dpl = segment.dpl; raw.db = segment.defaultSize32 ? 1 : 0
        raw.s = segment.codeOrData ? 1 : 0; raw.l = segment.long ? 1 : 0; raw.g = segment.granularity ? 1 : 0
        raw.unusable = segment.unusable ? 1 : 0
        return raw
    }

    private func wrap(_ body: () throws(KVMError) -> Void) throws(HyperError) {
        do { try body() } catch { throw error.hyperError }
    }

    /// Reads one MSR (for tests and, later, snapshots).
    func modelSpecificRegister(_ index: UInt32) throws(HyperError) -> UInt64 {
        var value: UInt64 = 0
        // SAFETY: `value` is a local the shim writes eight bytes into.
        guard unsafe chyper_get_msr(descriptor, index, &value) == 0 else {
            throw KVMError.systemCall(operation: "KVM_GET_MSRS", errorNumber: errno).hyperError
        }
        return value
    }

    /// Reads one CPUID leaf as the guest sees it (eax, ebx, ecx, edx).
    func cpuidLeaf(_ function: UInt32, index: UInt32 = 0) throws(HyperError) -> [UInt32] {
        var registers: [UInt32] = [0, 0, 0, 0]
        // SAFETY: the shim writes exactly four values into the four-element array.
        guard unsafe chyper_get_cpuid_leaf(descriptor, function, index, &registers) == 0 else {
            throw KVMError.systemCall(operation: "KVM_GET_CPUID2 leaf 0x\(String(function, radix: 16))", errorNumber: errno).hyperError
        }
        return registers
    }

    /// Reads a 32-bit local APIC register.
    func localAPICRegister(_ offset: UInt32) throws(HyperError) -> UInt32 {
        var value: UInt32 = 0
        // SAFETY: `value` is a local the shim writes four bytes into.
        guard unsafe chyper_read_lapic_register(descriptor, offset, &value) == 0 else {
            throw KVMError.systemCall(operation: "KVM_GET_LAPIC", errorNumber: errno).hyperError
        }
        return value
    }

    private var currentRIP: UInt64 { (try? registers().rip) ?? 0 }

    func saveState() throws(HyperError) -> AcceleratorState {
        let size = Int(chyper_vcpu_state_size())
        var bytes = [UInt8](repeating: 0, count: size)
        // SAFETY: the buffer holds exactly one chyper_vcpu_state (its size from C); the run area is live.
        let result = unsafe bytes.withUnsafeMutableBytes { raw in
            unsafe chyper_vcpu_save(machine.systemDescriptor, descriptor, runArea, raw.baseAddress!.assumingMemoryBound(to: chyper_vcpu_state.self))
        }
        guard result == 0 else { throw KVMError.systemCall(operation: "save the vCPU's state", errorNumber: errno).hyperError }
        return AcceleratorState(accelerator: KVMHypervisor.acceleratorName, bytes: bytes)
    }

    func restoreState(_ state: AcceleratorState) throws(HyperError) {
        let size = Int(chyper_vcpu_state_size())
        guard state.accelerator == KVMHypervisor.acceleratorName, state.bytes.count == size else {
            throw HyperError(.invalidArgument, "a vCPU state from \(state.accelerator) (\(state.bytes.count) bytes) is not a KVM vCPU state of this build")
        }
        var step: UnsafePointer<CChar>?
        var msr: UInt32 = 0
        // SAFETY: the buffer holds exactly one chyper_vcpu_state, read by the call only; the shim writes a
        // pointer to a static string and an integer into the locals.
        let result = unsafe state.bytes.withUnsafeBytes { raw in
            unsafe chyper_vcpu_restore(descriptor, raw.baseAddress!.assumingMemoryBound(to: chyper_vcpu_state.self), &step, &msr)
        }
        guard result == 0 else {
            let number = errno
            // SAFETY: the shim set `step` to a static NUL-terminated string.
            let call = unsafe step.map { unsafe String(cString: $0) } ?? "a call"
            let what = msr != 0 ? "\(call) (MSR 0x\(String(msr, radix: 16)))" : call
            throw KVMError.systemCall(operation: "restore the vCPU's state: \(what)", errorNumber: number).hyperError
        }
    }

    func requestStop() {
        stopRequested.store(true, ordering: .sequentiallyConsistent)
        // SAFETY: the run area stays mapped for this object's lifetime; the shim writes one field atomically.
        unsafe chyper_vcpu_kick(runArea, runningThread.load(ordering: .sequentiallyConsistent))
    }

    func run(bus: MachineBus, deadline: UInt64?) throws(HyperError) -> VMExit {
        let thread = chyper_vcpu_thread_prepare()
        guard thread > 0 else { throw KVMError.systemCall(operation: "prepare the vCPU thread", errorNumber: errno).hyperError }
        runningThread.store(thread, ordering: .sequentiallyConsistent)
        defer { runningThread.store(0, ordering: .sequentiallyConsistent) }
        // SAFETY: the timer handle is a plain C struct owned by this frame and disarmed before it ends.
        var wakeup = unsafe chyper_wakeup()
        if let deadline {
            let now = HostSystem.monotonicNanoseconds()
            // SAFETY: as above.
            guard unsafe chyper_wakeup_arm(&wakeup, deadline > now ? deadline - now : 1) == 0 else {
                throw KVMError.systemCall(operation: "arm the vCPU deadline timer", errorNumber: errno).hyperError
            }
        }
        // SAFETY: as above.
        defer { unsafe chyper_wakeup_disarm(&wakeup) }
        while true {
            // A stop request is taken once: the next `run` (a paused machine resumed) runs again. A plain load
            // first keeps the common case (no request) free of a read-modify-write on every exit.
            if stopRequested.load(ordering: .sequentiallyConsistent), stopRequested.exchange(false, ordering: .sequentiallyConsistent) {
                // SAFETY: the run area stays mapped for this object's lifetime; the shim writes one field atomically.
                unsafe chyper_vcpu_clear_kick(runArea)
                return .stopped
            }
            if let deadline, HostSystem.monotonicNanoseconds() >= deadline { return .timedOut }
            let result = chyper_ioctl_value(descriptor, chyper_KVM_RUN(), 0)
            if result < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw KVMError.systemCall(operation: "KVM_RUN", errorNumber: errno).hyperError
            }
            if let exit = try handleExit(bus: bus) { return exit }
            if let requested = bus.requestedExit { return requested }
        }
    }

    /// Handles the exit KVM just reported; returns nil when the guest should simply continue.
    private func handleExit(bus: MachineBus) throws(HyperError) -> VMExit? {
        // SAFETY: `runArea` is valid for this object's lifetime (see there).
        let run = unsafe runArea
        // SAFETY: reading fields of the run area that KVM filled for this exit; see `runArea`.
        let reason = unsafe run.pointee.exit_reason
        switch reason {
        case Self.exitIO:
            // SAFETY: as above; the io member is the active one for KVM_EXIT_IO.
            let io = unsafe run.pointee.io
            let size = Int(io.size)
            let total = UInt64(io.count) * UInt64(size)
            guard [1, 2, 4].contains(size), io.data_offset + total <= UInt64(runAreaSize) else {
                return .failure(reason: "malformed port IO exit (size \(size), count \(io.count))", rip: currentRIP)
            }
            for index in 0..<UInt64(io.count) {
                let address = runAreaAddress + UInt(io.data_offset + index * UInt64(size))
                // SAFETY: address + size lies inside the run area (checked above).
                let data = unsafe UnsafeMutableRawPointer(bitPattern: address)!
                if io.direction == 1 {  // KVM_EXIT_IO_OUT
                    var value: UInt64 = 0
                    for byte in 0..<size { value |= UInt64(unsafe data.load(fromByteOffset: byte, as: UInt8.self)) << UInt64(byte * 8) }
                    bus.writePort(io.port, size: size, value: value)
                } else {
                    let value = bus.readPort(io.port, size: size)
                    for byte in 0..<size { unsafe data.storeBytes(of: UInt8(truncatingIfNeeded: value >> UInt64(byte * 8)), toByteOffset: byte, as: UInt8.self) }
                }
            }
            return nil
        case Self.exitMMIO:
            // SAFETY: the mmio member is the active one for KVM_EXIT_MMIO.
            let mmio = unsafe run.pointee.mmio
            let size = Int(mmio.len)
            guard (1...8).contains(size) else { return .failure(reason: "malformed MMIO exit (length \(size))", rip: currentRIP) }
            if mmio.is_write != 0 {
                // SAFETY: copies the eight data bytes of a local tuple.
                let bytes = unsafe withUnsafeBytes(of: mmio.data) { unsafe Array($0) }
                let value = (0..<size).reduce(UInt64(0)) { $0 | UInt64(bytes[$1]) << UInt64($1 * 8) }
                bus.writeMemory(mmio.phys_addr, size: size, value: value)
            } else {
                let value = bus.readMemory(mmio.phys_addr, size: size)
                var data = mmio.data
                // SAFETY: writes at most eight bytes (size <= 8, checked) into a local eight-byte tuple.
                unsafe withUnsafeMutableBytes(of: &data) { buffer in
                    for byte in 0..<size { unsafe buffer[byte] = UInt8(truncatingIfNeeded: value >> UInt64(byte * 8)) }
                }
                // SAFETY: writing back the data field of the active mmio member before the next KVM_RUN.
                unsafe run.pointee.mmio.data = data
            }
            return nil
        case Self.exitHalt:
            return .halt
        case Self.exitShutdown:
            return .shutdown(rip: currentRIP)
        case Self.exitSystemEvent:
            // SAFETY: the system_event member is the active one for KVM_EXIT_SYSTEM_EVENT.
            let type = unsafe run.pointee.system_event.type
            return type == 2 ? .reset : .powerOff  // KVM_SYSTEM_EVENT_RESET, else shutdown or crash
        case Self.exitFailEntry:
            // SAFETY: the fail_entry member is the active one for KVM_EXIT_FAIL_ENTRY.
            let hardware = unsafe run.pointee.fail_entry.hardware_entry_failure_reason
            return .failure(reason: "VM entry failed (hardware reason 0x\(String(hardware, radix: 16)))", rip: currentRIP)
        case Self.exitInternalError:
            // SAFETY: the internal member is the active one for KVM_EXIT_INTERNAL_ERROR.
            let suberror = unsafe run.pointee.internal.suberror
            let meaning = suberror == 1 ? "emulation failure" : "suberror \(suberror)"
            return .failure(reason: "KVM internal error (\(meaning))", rip: currentRIP)
        case Self.exitInterrupted:
            return nil
        default:
            return .failure(reason: "unhandled KVM exit \(reason)", rip: currentRIP)
        }
    }
}
#endif
