/// One classic-BPF instruction, laid out as the kernel's `struct sock_filter`.
public struct BPFInstruction: Equatable, Sendable {
    public var code: UInt16
    public var jumpIfTrue: UInt8
    public var jumpIfFalse: UInt8
    public var constant: UInt32

    /// Creates an instruction.
    public init(code: UInt16, jumpIfTrue: UInt8 = 0, jumpIfFalse: UInt8 = 0, constant: UInt32) {
        self.code = code
        self.jumpIfTrue = jumpIfTrue
        self.jumpIfFalse = jumpIfFalse
        self.constant = constant
    }

    // Opcodes used by the filter.
    public static let loadWord: UInt16 = 0x20        // BPF_LD | BPF_W | BPF_ABS
    public static let jumpEqual: UInt16 = 0x15       // BPF_JMP | BPF_JEQ | BPF_K
    public static let jumpGreaterEqual: UInt16 = 0x35 // BPF_JMP | BPF_JGE | BPF_K
    public static let jumpSet: UInt16 = 0x45         // BPF_JMP | BPF_JSET | BPF_K
    public static let returnConstant: UInt16 = 0x06  // BPF_RET | BPF_K
}

/// The seccomp-bpf program that the process backend installs just before exec: a deny list at least as
/// strong as Docker's default profile for what a sandboxed shell never needs.
///
/// It kills the process for a foreign architecture or the x32 ABI, answers EPERM for kernel-attack-surface
/// and escape-prone calls (keyrings, bpf, userfaultfd, perf, kexec, modules, the mount family, namespaces,
/// io_uring, handle-based opens, clock and host settings), ENOSYS for clone3 (whose flags the filter cannot
/// inspect, so libc falls back to clone), EPERM for clone with namespace flags, and EPERM for the TIOCSTI
/// and TIOCLINUX terminal ioctls, compared on the low 32 bits of the request.
public enum SeccompFilter {
    /// `AUDIT_ARCH_X86_64`.
    public static let auditArchX86_64: UInt32 = 0xC000_003E
    /// The x32 ABI marker bit in syscall numbers.
    public static let x32Bit: UInt32 = 0x4000_0000

    // `struct seccomp_data` offsets.
    static let numberOffset: UInt32 = 0
    static let archOffset: UInt32 = 4
    static func argumentLowOffset(_ index: UInt32) -> UInt32 { 16 + index * 8 }

    // Return values.
    public static let allow: UInt32 = 0x7FFF_0000
    public static let killProcess: UInt32 = 0x8000_0000
    public static func errno(_ number: UInt32) -> UInt32 { 0x0005_0000 | (number & 0xFFFF) }

    static let eperm: UInt32 = 1
    static let enosys: UInt32 = 38

    /// Syscalls (x86-64 numbers) refused with EPERM, with their names for documentation and tests.
    public static let deniedSyscalls: [(name: String, number: UInt32)] = [
        ("syslog", 103), ("uselib", 134), ("vhangup", 153), ("pivot_root", 155), ("_sysctl", 156),
        ("adjtimex", 159), ("chroot", 161), ("acct", 163), ("settimeofday", 164), ("mount", 165), ("umount2", 166),
        ("swapon", 167), ("swapoff", 168), ("reboot", 169), ("sethostname", 170), ("setdomainname", 171), ("iopl", 172),
        ("ioperm", 173), ("create_module", 174), ("init_module", 175), ("delete_module", 176), ("get_kernel_syms", 177),
        ("query_module", 178), ("quotactl", 179), ("nfsservctl", 180), ("lookup_dcookie", 212), ("clock_settime", 227),
        ("mbind", 237), ("set_mempolicy", 238), ("kexec_load", 246), ("add_key", 248), ("request_key", 249), ("keyctl", 250),
        ("unshare", 272), ("move_pages", 279), ("perf_event_open", 298), ("fanotify_init", 300), ("open_by_handle_at", 304),
        ("clock_adjtime", 305), ("setns", 308), ("process_vm_readv", 310), ("process_vm_writev", 311), ("kcmp", 312),
        ("finit_module", 313), ("kexec_file_load", 320), ("bpf", 321), ("userfaultfd", 323), ("io_uring_setup", 425),
        ("io_uring_enter", 426), ("io_uring_register", 427), ("open_tree", 428), ("move_mount", 429), ("fsopen", 430),
        ("fsconfig", 431), ("fsmount", 432), ("fspick", 433), ("pidfd_getfd", 438), ("mount_setattr", 442),
        ("quotactl_fd", 443), ("lsm_get_self_attr", 459), ("lsm_set_self_attr", 460), ("lsm_list_modules", 461),
    ]

    static let cloneNumber: UInt32 = 56
    static let clone3Number: UInt32 = 435
    static let ioctlNumber: UInt32 = 16
    /// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
    public static let namespaceCloneFlags: UInt32 = 0x7E02_0000
    /// TIOCSTI and TIOCLINUX.
    public static let deniedIoctls: [UInt32] = [0x5412, 0x541C]

    /// Returns the filter program.
    public static func program() -> [BPFInstruction] {
        typealias I = BPFInstruction
        var body: [I] = []
        // Per-syscall checks; each ends with its own return so jumps stay short.
        for (_, number) in deniedSyscalls {
            body.append(I(code: I.jumpEqual, jumpIfTrue: 0, jumpIfFalse: 1, constant: number))
            body.append(I(code: I.returnConstant, constant: errno(eperm)))
        }
        body.append(I(code: I.jumpEqual, jumpIfTrue: 0, jumpIfFalse: 1, constant: clone3Number))
        body.append(I(code: I.returnConstant, constant: errno(enosys)))
        // clone: refuse namespace flags (argument 0, low word).
        body.append(I(code: I.jumpEqual, jumpIfTrue: 0, jumpIfFalse: 4, constant: cloneNumber))
        body.append(I(code: I.loadWord, constant: argumentLowOffset(0)))
        body.append(I(code: I.jumpSet, jumpIfTrue: 0, jumpIfFalse: 1, constant: namespaceCloneFlags))
        body.append(I(code: I.returnConstant, constant: errno(eperm)))
        body.append(I(code: I.returnConstant, constant: allow))
        // ioctl: refuse terminal injection, comparing the request's low 32 bits only.
        body.append(I(code: I.jumpEqual, jumpIfTrue: 0, jumpIfFalse: UInt8(2 + 2 * deniedIoctls.count), constant: ioctlNumber))
        body.append(I(code: I.loadWord, constant: argumentLowOffset(1)))
        for request in deniedIoctls {
            body.append(I(code: I.jumpEqual, jumpIfTrue: 0, jumpIfFalse: 1, constant: request))
            body.append(I(code: I.returnConstant, constant: errno(eperm)))
        }
        body.append(I(code: I.returnConstant, constant: allow))
        body.append(I(code: I.returnConstant, constant: allow))

        return [
            I(code: I.loadWord, constant: archOffset),
            I(code: I.jumpEqual, jumpIfTrue: 1, jumpIfFalse: 0, constant: auditArchX86_64),
            I(code: I.returnConstant, constant: killProcess),
            I(code: I.loadWord, constant: numberOffset),
            I(code: I.jumpGreaterEqual, jumpIfTrue: 0, jumpIfFalse: 1, constant: x32Bit),
            I(code: I.returnConstant, constant: killProcess),
        ] + body
    }

    /// Returns the program as the bytes of a `struct sock_filter` array (little-endian, as on x86-64).
    public static func encode(_ program: [BPFInstruction]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(program.count * 8)
        for instruction in program {
            bytes.append(UInt8(instruction.code & 0xFF))
            bytes.append(UInt8(instruction.code >> 8))
            bytes.append(instruction.jumpIfTrue)
            bytes.append(instruction.jumpIfFalse)
            for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: instruction.constant >> UInt32(shift))) }
        }
        return bytes
    }
}
