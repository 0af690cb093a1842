import Testing
@testable import HyperProcess

/// A classic-BPF interpreter for the instructions the filter uses, to check its verdicts without a kernel.
func evaluate(_ program: [BPFInstruction], number: UInt32, arch: UInt32 = SeccompFilter.auditArchX86_64, arguments: [UInt64] = []) -> UInt32 {
    var accumulator: UInt32 = 0
    var pc = 0
    var steps = 0
    while pc < program.count, steps < 10_000 {
        steps += 1
        let instruction = program[pc]
        switch instruction.code {
        case BPFInstruction.loadWord:
            switch instruction.constant {
            case 0: accumulator = number
            case 4: accumulator = arch
            case let offset where offset >= 16:
                let index = Int((offset - 16) / 8)
                let argument = index < arguments.count ? arguments[index] : 0
                accumulator = (offset - 16) % 8 == 0 ? UInt32(truncatingIfNeeded: argument) : UInt32(truncatingIfNeeded: argument >> 32)
            default: accumulator = 0
            }
            pc += 1
        case BPFInstruction.jumpEqual:
            pc += 1 + Int(accumulator == instruction.constant ? instruction.jumpIfTrue : instruction.jumpIfFalse)
        case BPFInstruction.jumpGreaterEqual:
            pc += 1 + Int(accumulator >= instruction.constant ? instruction.jumpIfTrue : instruction.jumpIfFalse)
        case BPFInstruction.jumpSet:
            pc += 1 + Int(accumulator & instruction.constant != 0 ? instruction.jumpIfTrue : instruction.jumpIfFalse)
        case BPFInstruction.returnConstant:
            return instruction.constant
        default:
            return 0xDEAD
        }
    }
    return 0xDEAD  // Fell off the end or looped: a broken program.
}

@Suite("Seccomp filter")
struct SeccompFilterTests {
    let program = SeccompFilter.program()

    @Test func foreignArchitectureAndX32AreKilled() {
        #expect(evaluate(program, number: 0, arch: 0x4000_0003) == SeccompFilter.killProcess)  // i386
        #expect(evaluate(program, number: 0x4000_0000 | 39) == SeccompFilter.killProcess)
    }

    @Test(arguments: SeccompFilter.deniedSyscalls.map(\.number))
    func deniedSyscallsGetEPERM(number: UInt32) {
        #expect(evaluate(program, number: number) == SeccompFilter.errno(1))
    }

    @Test(arguments: [UInt32(0), 1, 2, 3, 9, 57, 59, 61, 62, 101, 231, 257])
    func ordinarySyscallsAreAllowed(number: UInt32) {
        #expect(evaluate(program, number: number) == SeccompFilter.allow)
    }

    @Test func cloneIsAllowedWithoutNamespaceFlags() {
        #expect(evaluate(program, number: 56, arguments: [0x0100_0011]) == SeccompFilter.allow)  // fork-like clone
        #expect(evaluate(program, number: 56, arguments: [0x1000_0000]) == SeccompFilter.errno(1))  // CLONE_NEWUSER
        #expect(evaluate(program, number: 56, arguments: [0x4000_0000]) == SeccompFilter.errno(1))  // CLONE_NEWNET
        #expect(evaluate(program, number: 435) == SeccompFilter.errno(38))
    }

    @Test func terminalInjectionIoctlsAreRefusedEvenWithHighBits() {
        #expect(evaluate(program, number: 16, arguments: [0, 0x5412]) == SeccompFilter.errno(1))
        #expect(evaluate(program, number: 16, arguments: [0, 0x1_0000_5412]) == SeccompFilter.errno(1))
        #expect(evaluate(program, number: 16, arguments: [0, 0x541C]) == SeccompFilter.errno(1))
        #expect(evaluate(program, number: 16, arguments: [0, 0x5401]) == SeccompFilter.allow)  // TCGETS
    }

    @Test func encodingIsEightBytesPerInstruction() {
        let bytes = SeccompFilter.encode(program)
        #expect(bytes.count == program.count * 8)
        #expect(Array(bytes[0..<8]) == [0x20, 0x00, 0, 0, 4, 0, 0, 0])
        #expect(program.count < 4096, "the kernel's instruction limit")
    }
}
