import Hyper
import Synchronization
import Testing
@testable import HyperKVM

/// Waits up to `seconds` for `condition`.
func eventually(seconds: Double = 20, _ condition: () -> Bool) -> Bool {
    let until = HostSystem.monotonicNanoseconds() + UInt64(seconds * 1e9)
    while HostSystem.monotonicNanoseconds() < until {
        if condition() { return true }
        _ = HostSystem.waitReadable([], milliseconds: 5)
    }
    return condition()
}

@Suite("MicroVM on real KVM", .serialized, .enabled(if: kvmDeviceUsable, "needs read-write access to /dev/kvm"))
struct MicroVMTests {
    static func configuration(_ kernel: [UInt8], vcpus: Int = 1) -> MicroVM.Configuration {
        MicroVM.Configuration(kernel: kernel, kernelName: "tiny guest", initrd: nil, commandLine: "", memoryBytes: 64 << 20, vcpus: vcpus)
    }

    @Test func virtioWindowsAreMappedAndTheResetEndsTheMachine() throws {
        let ended = Locked<Result<VMExit, HyperError>?>(nil)
        let vm = try MicroVM(Self.configuration(TinyGuest.mmioProbeImage(base: UInt32(MicroVM.virtioBase)), vcpus: 2),
                             devices: [VirtioEntropy { Array(repeating: 0, count: $0) }], console: ConsoleLog(), on: KVMHypervisor())
        try vm.start { result in ended.withLock { $0 = result } }
        #expect(eventually { ended.value != nil })
        vm.stop()
        #expect(try ended.value?.get() == .reset)
        #expect(vm.console.lastLines(5) == ["Y"], "the guest read the virtio-mmio magic value")
        // The probe wrote ACKNOWLEDGE|DRIVER|FEATURES_OK|DRIVER_OK without VERSION_1: FEATURES_OK did not stick.
        #expect(vm.transports[0].read(offset: 0x70, size: 4) == 0x07)
    }

    @Test func stopEndsASpinningGuestFromAnotherThread() throws {
        var image = TinyGuest.serialHelloImage()
        image[TinyGuestLayout.codeOffset] = 0xEB  // jmp $
        image[TinyGuestLayout.codeOffset + 1] = 0xFE
        let ended = Locked<Bool>(false)
        let vm = try MicroVM(Self.configuration(image, vcpus: 2), devices: [], console: ConsoleLog(), on: KVMHypervisor())
        try vm.start { _ in ended.withLock { $0 = true } }
        #expect(!eventually(seconds: 0.2) { ended.value }, "the guest spins until stopped")
        let start = HostSystem.monotonicNanoseconds()
        vm.stop()
        #expect(HostSystem.monotonicNanoseconds() - start < 5_000_000_000)
        #expect(!ended.value, "a stop is not the guest ending the machine")
    }

    @Test func interruptsGoThroughAnIrqfd() throws {
        let machine = try KVMHypervisor().makeVirtualMachine(memory: GuestMemory(size: 16 << 20))
        let trigger = try machine.makeInterruptTrigger(line: MicroVM.virtioFirstInterrupt)
        #expect(trigger is KVMInterruptTrigger)
        trigger.fire()
    }

    @Test func machineSizesAreChecked() {
        #expect(throws: HyperError.self) {
            _ = try MicroVM(MicroVM.Configuration(kernel: TinyGuest.serialHelloImage(), kernelName: "tiny", initrd: nil, commandLine: "",
                                                  memoryBytes: 4 << 30, vcpus: 1), devices: [], console: ConsoleLog(), on: KVMHypervisor())
        }
        #expect(throws: HyperError.self) {
            _ = try MicroVM(Self.configuration(TinyGuest.serialHelloImage(), vcpus: 0), devices: [], console: ConsoleLog(), on: KVMHypervisor())
        }
    }
}
