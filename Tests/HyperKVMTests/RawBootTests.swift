#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Hyper
import Testing
@testable import HyperKVM

/// Writes `bytes` to a fresh temporary file and returns its path.
func temporaryFile(_ bytes: [UInt8], name: String = "guest.elf") throws -> String {
    let path = NSTemporaryDirectory() + "hyperctl-\(UUID().uuidString)-\(name)"
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
}

/// Boots `kernel` on real KVM with the console on a pipe; returns the exit and the console text.
func bootOnKVM(_ kernel: [UInt8], timeout: Duration = .seconds(20),
               devices: [(base: UInt64, length: UInt64, device: any BusDevice)] = []) throws -> (Result<SandboxExit, HyperError>, String) {
    let path = try temporaryFile(kernel)
    defer { try? FileManager.default.removeItem(atPath: path) }
    let console = Pipe()
    var request = BootRequest(kernelPath: path, memoryBytes: 64 << 20, timeout: timeout)
    request.consoleOutput = console.fileHandleForWriting.fileDescriptor
    let result: Result<SandboxExit, HyperError>
    do {
        result = .success(try RawMachine.boot(request, on: KVMHypervisor(), devices: devices))
    } catch {
        result = .failure(error)
    }
    try console.fileHandleForWriting.close()
    let text = String(decoding: console.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    return (result, text)
}

@Suite("Raw VM boot on real KVM", .serialized, .enabled(if: kvmDeviceUsable, "needs read-write access to /dev/kvm"))
struct RawBootTests {
    @Test func pvhGuestPrintsOnCOM1AndResets() throws {
        let (result, console) = try bootOnKVM(TinyGuest.serialHelloImage(message: "hello from a PVH guest\n"))
        #expect(try result.get() == .exited(0))
        #expect(console == "hello from a PVH guest\n")
    }

    @Test func longModeGuestRunsWithTheLinuxEntryState() throws {
        let (result, console) = try bootOnKVM(TinyGuest.serialHelloImage(message: "hello from long mode\n", longMode: true))
        #expect(try result.get() == .exited(0))
        #expect(console == "hello from long mode\n")
    }

    @Test func newVCPUsGetBootMSRsAndLINTRouting() throws {
        let machine = try KVMHypervisor().makeVirtualMachine(memory: GuestMemory(size: 16 << 20))
        let vcpu = try #require(try machine.makeVCPU(index: 0) as? KVMVirtualCPU)
        #expect(try vcpu.modelSpecificRegister(0x2FF) == 0x806, "MTRRdefType")
        #expect(try vcpu.modelSpecificRegister(0x1A0) & 1 == 1, "IA32_MISC_ENABLE fast strings")
        #expect((try vcpu.localAPICRegister(0x350) >> 8) & 7 == 7, "LINT0 delivers ExtINT")
        #expect((try vcpu.localAPICRegister(0x360) >> 8) & 7 == 4, "LINT1 delivers NMI")
    }

    @Test func cpuidIsNormalizedPerVCPU() throws {
        let machine = try KVMHypervisor().makeVirtualMachine(memory: GuestMemory(size: 16 << 20))
        _ = try machine.makeVCPU(index: 0)
        let second = try #require(try machine.makeVCPU(index: 1) as? KVMVirtualCPU)
        let leaf1 = try second.cpuidLeaf(1)
        #expect(leaf1[2] & (1 << 31) != 0, "hypervisor bit")
        #expect(leaf1[1] >> 24 == 1, "initial APIC id of vCPU 1")
        let device = try KVMDevice()
        if device.checkExtension(72) > 0 { #expect(leaf1[2] & (1 << 24) != 0, "TSC-deadline") }  // KVM_CAP_TSC_DEADLINE_TIMER
        if let topology = try? second.cpuidLeaf(0xB, index: 0) {
            #expect(topology[3] == 1, "x2APIC id in leaf 0xB")
            let core = try second.cpuidLeaf(0xB, index: 1)
            #expect((core[2] >> 8) & 0xFF == 2, "leaf 0xB subleaf 1 is the core level")
        }
    }

    @Test func bzImageBootsThroughThe64BitBootProtocol() throws {
        let (result, console) = try bootOnKVM(TinyGuest.serialHelloBzImage(message: "hello from a bzImage\n"))
        #expect(try result.get() == .exited(0))
        #expect(console == "hello from a bzImage\n")
    }

    /// A virtio-mmio register block stand-in: MagicValue and Version, and a log of writes.
    final class RegisterBlock: BusDevice {
        var writes: [(offset: UInt64, size: Int, value: UInt64)] = []
        func read(offset: UInt64, size: Int) -> UInt64 {
            switch offset {
            case 0: return 0x7472_6976  // "virt"
            case 4: return 2
            default: return 0
            }
        }
        func write(offset: UInt64, size: Int, value: UInt64) { writes.append((offset, size, value)) }
    }

    @Test func guestCodeReadsAndWritesAnMMIORegisterBlock() throws {
        let block = RegisterBlock()
        let (result, console) = try bootOnKVM(TinyGuest.mmioProbeImage(base: 0xD000_0000), devices: [(0xD000_0000, 0x200, block)])
        #expect(try result.get() == .exited(0))
        #expect(console == "Y\n", "the guest read the wrong magic value")
        #expect(block.writes.count == 1 && block.writes.first?.offset == 0x70 && block.writes.first?.size == 4 && block.writes.first?.value == 0x0F)
    }

    @Test func guestThatSpinsForeverTimesOut() throws {
        // A PVH guest whose entry is `jmp $` (EB FE): it never exits on its own.
        var image = TinyGuest.serialHelloImage()
        image[TinyGuestLayout.codeOffset] = 0xEB
        image[TinyGuestLayout.codeOffset + 1] = 0xFE
        let (result, _) = try bootOnKVM(image, timeout: .milliseconds(300))
        #expect(try result.get() == .timedOut)
    }

    @Test func undeliverableFaultIsAVMFailureWithRIP() throws {
        // `int3` with an empty IDT: the exception cannot be delivered. Hardware KVM reports a triple fault
        // (shutdown); software-emulated KVM may report an emulation failure. Either is a VM failure at a RIP.
        var image = TinyGuest.serialHelloImage()
        image[TinyGuestLayout.codeOffset] = 0xCC
        let (result, _) = try bootOnKVM(image, timeout: .seconds(20))
        guard case let .failure(error) = result else {
            Issue.record("a triple-faulting guest booted: \(result)")
            return
        }
        #expect(error.code == .phaseFailed)
        #expect(error.message.contains("triple fault") || error.message.contains("VM failure"), "\(error.message)")
        #expect(error.message.contains("RIP 0x"))
    }
}

/// Offsets inside `TinyGuest.serialHelloImage()`: ELF header (52), two program headers (64), the note (20).
enum TinyGuestLayout {
    static let codeOffset = 136
}

@Suite("PVH loading")
struct PVHLoaderTests {
    @Test func tinyGuestLoadsAtOneMegabyte() throws {
        let memory = try GuestMemory(size: 4 << 20)
        let kernel = try PVHLoader.load(TinyGuest.serialHelloImage(), into: memory)
        #expect(kernel.entry == .pvh(0x10_0000))
        #expect(try memory.read(4, at: 0x10_0000) == [0x66, 0xBA, 0xF8, 0x03])
        let info = try PVHLoader.writeStartInfo(into: memory, commandLine: "console=ttyS0", initrd: nil)
        #expect(try memory.read(UInt32.self, at: info) == PVHLoader.startInfoMagic)
        #expect(try memory.read(UInt64.self, at: info + 24) == BootLayout.commandLineAddress)
        #expect(try memory.read(14, at: BootLayout.commandLineAddress) == Array("console=ttyS0\0".utf8))
    }

    @Test func hostileImagesAreRefusedWithAReason() throws {
        let memory = try GuestMemory(size: 4 << 20)
        let good = TinyGuest.serialHelloImage()
        var truncated = good
        truncated.removeLast(30)
        var lowLoad = good
        lowLoad[52 + 12] = 0; lowLoad[52 + 13] = 0; lowLoad[52 + 14] = 0  // p_paddr = 0
        var huge = good
        huge[52 + 20] = 0xFF; huge[52 + 21] = 0xFF; huge[52 + 22] = 0xFF; huge[52 + 23] = 0x7F  // p_memsz ~ 2 GiB
        var noNote = good
        noNote[52 + 32 + 0] = 0  // the note's program header becomes PT_NULL
        var wrongMachine = good
        wrongMachine[18] = 40  // ARM
        let cases: [([UInt8], String)] = [
            (Array(good.prefix(20)), "no ELF header"), (truncated, "truncated"), (lowLoad, "below 1 MiB"),
            (huge, "does not fit"), (noNote, "without a Xen PVH entry note"), (wrongMachine, "is not x86"),
        ]
        for (image, reason) in cases {
            do {
                _ = try PVHLoader.load(image, into: memory)
                Issue.record("accepted an image with \(reason)")
            } catch {
                #expect(error.message.contains(reason), "\(error.message)")
            }
        }
    }

    @Test func bzImageLoadsAndTheZeroPageCarriesTheHeader() throws {
        let memory = try GuestMemory(size: 8 << 20)
        let image = TinyGuest.serialHelloBzImage()
        let kernel = try LinuxLoader.load(image, into: memory)
        #expect(kernel.entry == 0x10_0200 && kernel.protocolVersion == 0x020F)
        #expect(try memory.read(4, at: 0x10_0200) == [0x66, 0xBA, 0xF8, 0x03])
        let page = try LinuxLoader.writeZeroPage(image: image, into: memory, commandLine: "console=ttyS0", initrd: (0x70_0000, 4096))
        #expect(try memory.read(4, at: page + 0x202) == Array("HdrS".utf8))
        #expect(try memory.read(UInt8.self, at: page + 0x210) == 0xFF)
        #expect(try memory.read(UInt32.self, at: page + 0x228) == UInt32(BootLayout.commandLineAddress))
        #expect(try memory.read(UInt32.self, at: page + 0x218) == 0x70_0000)
        #expect(try memory.read(UInt8.self, at: page + 0x1E8) == 3)
        #expect(try memory.read(UInt64.self, at: page + 0x2D0 + 40) == BootLayout.highMemoryStart)
        #expect(try memory.read(14, at: BootLayout.commandLineAddress) == Array("console=ttyS0\0".utf8))
    }

    @Test func hostileBzImagesAreRefusedWithAReason() throws {
        let memory = try GuestMemory(size: 4 << 20)
        let good = TinyGuest.serialHelloBzImage()
        func patched(_ offset: Int, _ bytes: [UInt8]) -> [UInt8] {
            var image = good
            image.replaceSubrange(offset..<offset + bytes.count, with: bytes)
            return image
        }
        let cases: [([UInt8], String)] = [
            (patched(0x1FE, [0, 0]), "boot flag"),
            (patched(0x206, [0x0A, 0x02]), "older than 2.12"),
            (patched(0x236, [0, 0]), "XLF_KERNEL_64"),
            (patched(0x211, [0]), "LOADED_HIGH"),
            (patched(0x1F1, [200]), "cover the whole file"),
            (patched(0x260, [0, 0, 0, 0x10]), "guest memory is"),  // init_size 256 MiB
        ]
        for (image, reason) in cases {
            do {
                _ = try LinuxLoader.load(image, into: memory)
                Issue.record("accepted a bzImage with \(reason)")
            } catch {
                #expect(error.message.contains(reason), "\(error.message)")
            }
        }
    }

    @Test func commandLineTooLongIsRefused() throws {
        let memory = try GuestMemory(size: 4 << 20)
        #expect(throws: HyperError.self) {
            _ = try PVHLoader.writeStartInfo(into: memory, commandLine: String(repeating: "x", count: 5000), initrd: nil)
        }
    }
}
