import Foundation
import Hyper
import Testing
@testable import HyperFake

/// Boots the built-in tiny guest's image on the scripted accelerator; returns the outcome, console text and recording.
func bootScripted(_ script: [ScriptedHypervisor.Step], longMode: Bool = false) throws -> (Result<SandboxExit, HyperError>, String, ScriptedHypervisor.Recording) {
    let path = NSTemporaryDirectory() + "hyperctl-scripted-\(UUID().uuidString).elf"
    try Data(TinyGuest.serialHelloImage(longMode: longMode)).write(to: URL(fileURLWithPath: path))
    defer { try? FileManager.default.removeItem(atPath: path) }
    let console = Pipe()
    var request = BootRequest(kernelPath: path, memoryBytes: 16 << 20)
    request.consoleOutput = console.fileHandleForWriting.fileDescriptor
    let recording = ScriptedHypervisor.Recording()
    let result: Result<SandboxExit, HyperError>
    do {
        result = .success(try RawMachine.boot(request, on: ScriptedHypervisor(script: script, recording: recording)))
    } catch {
        result = .failure(error)
    }
    try console.fileHandleForWriting.close()
    return (result, String(decoding: console.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self), recording)
}

@Suite("Devices and boot state, driven by the scripted accelerator")
struct DeviceTests {
    @Test func serialResetValuesFollowThe16550A() throws {
        let (_, _, recording) = try bootScripted([
            .portRead(port: 0x3FD, size: 1),  // LSR
            .portRead(port: 0x3FA, size: 1),  // IIR
            .portRead(port: 0x3FB, size: 1),  // LCR
            .portRead(port: 0x3F9, size: 1),  // IER
            .portWrite(port: 0x3FF, size: 1, value: 0x5A), .portRead(port: 0x3FF, size: 1),  // scratch
            .portWrite(port: 0x3FB, size: 1, value: 0x80),  // DLAB on
            .portWrite(port: 0x3F8, size: 1, value: 0x01), .portWrite(port: 0x3F9, size: 1, value: 0x00),
            .portRead(port: 0x3F8, size: 1), .portRead(port: 0x3F9, size: 1),
            .portWrite(port: 0x3FB, size: 1, value: 0x03),  // DLAB off, 8N1
        ])
        #expect(recording.reads == [0x60, 0x01, 0x00, 0x00, 0x5A, 0x01, 0x00])
    }

    @Test func transmittedBytesReachTheConsole() throws {
        let text = Array("hi there\n".utf8)
        let (result, console, _) = try bootScripted(text.map { .portWrite(port: 0x3F8, size: 1, value: UInt64($0)) } + [.exit(.powerOff)])
        #expect(try result.get() == .exited(0))
        #expect(console == "hi there\n")
    }

    @Test func transmitterEmptyInterruptRaisesAndClearsIRQ4() throws {
        let (_, _, recording) = try bootScripted([
            .portWrite(port: 0x3F9, size: 1, value: 0x02),  // enable THRE interrupt
            .portRead(port: 0x3FA, size: 1),                // IIR: THRE pending (0x02), clears it
            .portRead(port: 0x3FA, size: 1),                // now none pending (0x01)
        ])
        #expect(recording.reads == [0x02, 0x01])
        #expect(recording.interrupts.map(\.line) == [4, 4])
        #expect(recording.interrupts.map(\.active) == [true, false])
    }

    @Test func i8042ResetEndsTheRunAtOnce() throws {
        let (result, _, recording) = try bootScripted([
            .portRead(port: 0x64, size: 1),
            .portWrite(port: 0x64, size: 1, value: 0xFE),
            .portRead(port: 0x3FD, size: 1),  // never reached
        ])
        #expect(try result.get() == .exited(0))
        #expect(recording.reads == [0x00])
    }

    @Test func unbackedPortsAndMemoryReadAllOnes() throws {
        let (_, _, recording) = try bootScripted([
            .portRead(port: 0x80, size: 1), .portRead(port: 0x80, size: 2), .portRead(port: 0xCF8, size: 4),
            .mmioRead(address: 0xD000_0000, size: 4), .mmioRead(address: 0xD000_0000, size: 8),
            .portRead(port: 0x3F8, size: 3),  // an impossible size reads as unclaimed
            .portRead(port: 0x3FF, size: 2),  // straddles COM1's last port: unclaimed
            .portWrite(port: 0x1234, size: 4, value: 0xDEAD_BEEF),  // ignored
        ])
        #expect(recording.reads == [0xFF, 0xFFFF, 0xFFFF_FFFF, 0xFFFF_FFFF, .max, 0xFF_FFFF, 0xFFFF])
    }

    @Test func bootStateIsThePVHEntryState() throws {
        let (_, _, recording) = try bootScripted([])
        let registers = try #require(recording.registers)
        let special = try #require(recording.specialRegisters)
        #expect(registers.rip == UInt64(TinyGuest.loadAddress))
        #expect(registers.rbx == BootLayout.startInfoAddress)
        #expect(registers.rflags == 0x2)
        #expect(special.cr0 == 0x11)
        #expect(special.cs.selector == BootLayout.codeSelector32 && special.cs.defaultSize32 && !special.cs.long)
        #expect(special.ss.selector == BootLayout.dataSelector)
        #expect(special.gdt.base == BootLayout.gdtAddress)
    }

    @Test func longModeEntryStateAndPageTables() throws {
        let (_, _, recording) = try bootScripted([], longMode: true)
        let registers = try #require(recording.registers)
        let special = try #require(recording.specialRegisters)
        #expect(registers.rip == UInt64(TinyGuest.loadAddress) && registers.rsp == BootLayout.stackTop)
        #expect(special.cs.long && special.cs.selector == BootLayout.codeSelector64)
        #expect(special.cr3 == BootLayout.pml4Address && special.cr4 & 0x20 != 0)
        #expect(special.cr0 & 0x8000_0001 == 0x8000_0001 && special.efer == 0x500)
    }

    @Test func identityPageTablesMapTheFirstGigabyte() throws {
        let memory = try GuestMemory(size: 1 << 20)
        try BootLayout.writeIdentityPageTables(into: memory)
        #expect(try memory.read(UInt64.self, at: BootLayout.pml4Address) == BootLayout.pdptAddress | 3)
        #expect(try memory.read(UInt64.self, at: BootLayout.pdptAddress) == BootLayout.pageDirectoryAddress | 3)
        #expect(try memory.read(UInt64.self, at: BootLayout.pageDirectoryAddress + 511 * 8) == (511 << 21) | 0x83)
    }

    @Test(arguments: [
        (VMExit.shutdown(rip: 0x1234), "triple fault (shutdown exit) at RIP 0x1234"),
        (VMExit.failure(reason: "KVM internal error (emulation failure)", rip: 0xFFFF_8000), "emulation failure) at RIP 0xffff8000"),
        (VMExit.halt, "the guest halted"),
    ])
    func failuresNameTheExitAndRIP(exit: VMExit, message: String) throws {
        let (result, _, _) = try bootScripted([.exit(exit)])
        guard case let .failure(error) = result else {
            Issue.record("\(exit) did not fail the boot")
            return
        }
        #expect(error.code == .phaseFailed)
        #expect(error.message.contains(message), "\(error.message)")
    }

    @Test func timeoutIsItsOwnOutcome() throws {
        let (result, _, _) = try bootScripted([.exit(.timedOut)])
        #expect(try result.get() == .timedOut)
    }
}

@Suite("Machine bus and guest memory")
struct MachineBusTests {
    final class Recorder: BusDevice {
        var writes: [(UInt64, Int, UInt64)] = []
        func read(offset: UInt64, size: Int) -> UInt64 { 0x1122_3344_5566_7788 }
        func write(offset: UInt64, size: Int, value: UInt64) { writes.append((offset, size, value)) }
    }

    @Test func overlappingOrEmptyRangesAreRefused() throws {
        let bus = MachineBus()
        try bus.mapPorts(0x3F8, length: 8, to: Recorder())
        #expect(throws: HyperError.self) { try bus.mapPorts(0x3FC, length: 8, to: Recorder()) }
        #expect(throws: HyperError.self) { try bus.mapMemory(0x1000, length: 0, to: Recorder()) }
        #expect(throws: HyperError.self) { try bus.mapMemory(.max - 4, length: 16, to: Recorder()) }
    }

    @Test func readsAreTruncatedToTheAccessSize() throws {
        let bus = MachineBus()
        let device = Recorder()
        try bus.mapMemory(0xD000_0000, length: 0x1000, to: device)
        #expect(bus.readMemory(0xD000_0004, size: 1) == 0x88)
        #expect(bus.readMemory(0xD000_0004, size: 2) == 0x7788)
        bus.writeMemory(0xD000_0010, size: 2, value: 0xABCD_EF01)
        #expect(device.writes.count == 1 && device.writes[0].0 == 0x10 && device.writes[0].2 == 0xEF01)
        #expect(bus.readMemory(0xD000_0FFE, size: 4) == 0xFFFF_FFFF, "an access crossing the device's end is unclaimed")
    }

    @Test func guestMemoryAccessesAreBoundsChecked() throws {
        let memory = try GuestMemory(size: 8192)
        try memory.write(UInt32(0xCAFE_F00D), at: 8188)
        #expect(try memory.read(UInt32.self, at: 8188) == 0xCAFE_F00D)
        #expect(throws: HyperError.self) { _ = try memory.read(UInt32.self, at: 8189) }
        #expect(throws: HyperError.self) { _ = try memory.read(16, at: .max - 8) }
        #expect(throws: HyperError.self) { try memory.write([1, 2, 3], at: 8190) }
        #expect(throws: HyperError.self) { _ = try memory.read(-1, at: 0) }
        #expect(throws: HyperError.self) { try memory.zero(1, at: 8192) }
        #expect(memory.contains(8192, count: 0) && !memory.contains(8192, count: 1))
        #expect(throws: HyperError.self) { _ = try GuestMemory(size: 0) }
    }
}
