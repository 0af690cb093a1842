#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Hyper
import Testing
@testable import HyperKVM

/// A counting guest on real KVM, stopped part-way, its state saved, and restored into fresh VMs.
@Suite("vCPU and VM state saved and restored on real KVM", .serialized, .enabled(if: kvmDeviceUsable, "needs read-write access to /dev/kvm"))
struct SnapshotTests {
    static let limit: UInt32 = 300
    static let memorySize: UInt64 = 16 << 20

    /// A machine with the counting guest's memory, COM1 and the i8042; its console collects into `output`.
    final class Machine {
        let memory: GuestMemory
        let vm: any VirtualMachine
        let vcpu: any VirtualCPU
        let bus = MachineBus()
        let serial: Serial16550
        let output = Locked<[UInt8]>([])

        /// `stopAfter`: the run stops once that many bytes were printed.
        init(memory: GuestMemory, stopAfter: Int? = nil) throws {
            self.memory = memory
            vm = try KVMHypervisor().makeVirtualMachine(memory: memory)
            vcpu = try vm.makeVCPU(index: 0)
            let output = self.output
            // The serial port writes on the vCPU's thread, the one that reads the bus's requested exit.
            struct BusReference: @unchecked Sendable { let bus: MachineBus }
            let reference = BusReference(bus: bus)
            serial = try RawMachine.mapLegacyDevices(on: bus, machine: vm) { bytes in
                let count = output.withLock { collected in
                    collected += bytes
                    return collected.count
                }
                if let stopAfter, count >= stopAfter, reference.bus.requestedExit == nil { reference.bus.requestedExit = .stopped }
            }
        }

        func run() throws -> VMExit {
            let exit = try vcpu.run(bus: bus, deadline: HostSystem.monotonicNanoseconds() + 60_000_000_000)
            serial.flush()
            return exit
        }

        var text: String { String(decoding: output.value, as: UTF8.self) }
    }

    /// A saved machine: its memory's bytes and the state of the VM, the vCPU and the serial port.
    struct Saved {
        var memory: [UInt8]
        var vm: AcceleratorState
        var vcpu: AcceleratorState
        var serial: Serial16550.State
    }

    func save(_ machine: Machine) throws -> Saved {
        Saved(memory: try machine.memory.read(Int(Self.memorySize), at: 0), vm: try machine.vm.saveState(),
              vcpu: try machine.vcpu.saveState(), serial: machine.serial.state)
    }

    func restore(_ saved: Saved) throws -> Machine {
        let memory = try GuestMemory(size: Self.memorySize)
        try memory.write(saved.memory, at: 0)
        let machine = try Machine(memory: memory)
        try machine.vm.restoreState(saved.vm)
        try machine.vcpu.restoreState(saved.vcpu)
        machine.serial.restore(saved.serial)
        return machine
    }

    /// The counting guest, run until it printed 100 counts.
    func stoppedCountingGuest() throws -> Machine {
        let memory = try GuestMemory(size: Self.memorySize)
        let entry = try GuestLoader.load(kernel: TinyGuest.countingImage(limit: Self.limit), kernelName: "counting guest", initrd: nil,
                                         commandLine: "", into: memory, vcpus: 1, virtioDevices: [])
        let machine = try Machine(memory: memory, stopAfter: 100)
        try machine.vcpu.setSpecialRegisters(entry.specialRegisters)
        try machine.vcpu.setRegisters(entry.registers)
        #expect(try machine.run() == .stopped)
        return machine
    }

    @Test func aGuestStoppedPartWayGoesOnFromItsCountInEveryRestore() throws {
        let original = try stoppedCountingGuest()
        let before = original.text
        #expect(before.count >= 100 && before.count < Int(Self.limit))
        let saved = try save(original)

        let expected = TinyGuest.countingOutput(limit: Self.limit)
        let first = try restore(saved)
        #expect(try first.run() == .reset)
        #expect(before + first.text == expected, "the restored guest goes on from count \(before.count)")
        // A second restore of the same state runs on its own, from the same point, unaffected by the first.
        let second = try restore(saved)
        #expect(try second.run() == .reset)
        #expect(second.text == first.text)
        // The original, resumed, finishes too.
        original.bus.requestedExit = nil
        #expect(try original.run() == .reset)
        #expect(original.text == expected)
    }

    @Test func aStateOfAnotherKindIsRefused() throws {
        let machine = try Machine(memory: try GuestMemory(size: Self.memorySize))
        let state = try machine.vcpu.saveState()
        var truncated = state
        truncated.bytes.removeLast()
        #expect(throws: HyperError.self) { try machine.vcpu.restoreState(truncated) }
        #expect(throws: HyperError.self) { try machine.vcpu.restoreState(AcceleratorState(accelerator: "hvf", bytes: state.bytes)) }
        #expect(throws: HyperError.self) { try machine.vm.restoreState(state) }
        try machine.vcpu.restoreState(state)
    }

    /// Runs the counting guest until it printed 100 counts and writes its snapshot into a new folder.
    func snapshotFolder() throws -> (folder: String, before: String) {
        let machine = try stoppedCountingGuest()
        let snapshot = try MachineSnapshot.capture(machine: machine.vm, vcpus: [machine.vcpu], devices: ["serial": machine.serial.state.encoded])
        let folder = NSTemporaryDirectory() + "hyperctl-snapshot-\(UUID().uuidString)"
        try snapshot.write(to: folder, memory: machine.memory)
        return (folder, machine.text)
    }

    /// A machine restored from a snapshot folder, its memory mapped copy-on-write from the file.
    func restore(from folder: String) throws -> Machine {
        let snapshot = try MachineSnapshot.read(from: folder)
        let machine = try Machine(memory: try MachineSnapshot.mapMemory(from: folder, snapshot: snapshot))
        try machine.vm.restoreState(snapshot.machine)
        try machine.vcpu.restoreState(snapshot.vcpus[0])
        machine.serial.restore(try #require(snapshot.devices["serial"].flatMap { Serial16550.State(encoded: $0) }))
        return machine
    }

    @Test func aSnapshotFolderRestoresTwiceFromItsFiles() throws {
        let (folder, before) = try snapshotFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        // The memory file is sparse: the guest touched a few pages of 16 MiB.
        var info = stat()
        #expect(stat(folder + "/memory", &info) == 0 && info.st_size == Int(Self.memorySize) && info.st_blocks * 512 < Int(Self.memorySize) / 4)
        let first = try restore(from: folder)
        let second = try restore(from: folder)
        #expect(try first.run() == .reset)
        #expect(before + first.text == TinyGuest.countingOutput(limit: Self.limit))
        #expect(try second.run() == .reset)
        #expect(second.text == first.text, "each restore has its own copy of memory")
    }

    @Test func aCorruptTruncatedOrForeignSnapshotIsRefused() throws {
        let (folder, _) = try snapshotFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let state = try Data(contentsOf: URL(fileURLWithPath: folder + "/state"))
        func refusal(_ mutate: (inout Data) -> Void) throws -> String {
            var changed = state
            mutate(&changed)
            try changed.write(to: URL(fileURLWithPath: folder + "/state"))
            defer { try? state.write(to: URL(fileURLWithPath: folder + "/state")) }
            do {
                _ = try MachineSnapshot.read(from: folder)
                return "accepted"
            } catch {
                return error.message
            }
        }
        #expect(try refusal { $0[$0.count / 2] ^= 0x40 }.contains("checksum"))
        #expect(try refusal { $0.removeLast(10) }.contains("truncated"))
        #expect(try refusal { $0[8] = 9 }.contains("format version 9"))
        #expect(try refusal { $0[0] = 0 }.contains("not a hyperctl snapshot"))
        _ = try MachineSnapshot.read(from: folder)
        // Memory cut short.
        let memoryFile = try #require(FileHandle(forWritingAtPath: folder + "/memory"))
        try memoryFile.truncate(atOffset: Self.memorySize / 2)
        try memoryFile.close()
        let snapshot = try MachineSnapshot.read(from: folder)
        #expect(throws: HyperError.self) { _ = try MachineSnapshot.mapMemory(from: folder, snapshot: snapshot) }
    }

    @Test func anotherReleaseOrCPUModelIsRefused() throws {
        var snapshot = MachineSnapshot(memorySize: 4096, machine: AcceleratorState(accelerator: "kvm", bytes: [1]),
                                       vcpus: [AcceleratorState(accelerator: "kvm", bytes: [2])], devices: [:])
        let folder = NSTemporaryDirectory() + "hyperctl-snapshot-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        snapshot.cpuIdentity = "OtherVendor 1 2 3"
        try snapshot.write(to: folder, memory: try GuestMemory(size: 4096))
        do {
            _ = try MachineSnapshot.read(from: folder)
            Issue.record("a snapshot of another CPU model was accepted")
        } catch {
            #expect(error.message.contains("another CPU model (OtherVendor 1 2 3)"))
        }
        snapshot.cpuIdentity = HostSystem.cpuIdentity()
        snapshot.release = "0.0.1"
        try? FileManager.default.removeItem(atPath: folder)
        try snapshot.write(to: folder, memory: try GuestMemory(size: 4096))
        do {
            _ = try MachineSnapshot.read(from: folder)
            Issue.record("a snapshot of another release was accepted")
        } catch {
            #expect(error.message.contains("hyperctl 0.0.1"))
        }
    }
}

/// A whole MicroVM (vCPU threads, COM1, a virtio transport) paused while the counting guest runs, written
/// out, resumed, and restored twice into fresh machines from the folder.
@Suite("MicroVM paused, snapshotted and restored on real KVM", .serialized, .enabled(if: kvmDeviceUsable, "needs read-write access to /dev/kvm"))
struct MicroVMSnapshotTests {
    static let limit: UInt32 = 6000

    func entropy() -> VirtioEntropy { VirtioEntropy { Array(repeating: 1, count: $0) } }

    /// Starts `vm` and waits for it to end by itself (the counting guest resets after its last count).
    func runToEnd(_ vm: MicroVM) throws -> VMExit? {
        let ended = Locked<Result<VMExit, HyperError>?>(nil)
        try vm.start { result in ended.withLock { $0 = result } }
        guard eventually(seconds: 60, { ended.value != nil }) else { return nil }
        vm.stop()
        return try ended.value?.get()
    }

    /// Everything the console kept, as one string.
    func printed(_ vm: MicroVM) -> String { vm.console.lastLines(1000).joined() }

    @Test func aPausedMachineGoesOnAndItsClonesGoOnFromTheSameCount() throws {
        let configuration = MicroVM.Configuration(kernel: TinyGuest.countingImage(limit: Self.limit), kernelName: "counting guest", initrd: nil,
                                                  commandLine: "", memoryBytes: 64 << 20, vcpus: 1)
        let origin = try MicroVM(configuration, devices: [entropy()], console: ConsoleLog(), on: KVMHypervisor())
        let ended = Locked<Result<VMExit, HyperError>?>(nil)
        try origin.start { result in ended.withLock { $0 = result } }
        #expect(eventually { printed(origin).count >= 50 })
        try origin.pause()
        let countAtPause = printed(origin).count
        #expect(countAtPause > 0 && countAtPause < Int(Self.limit), "paused part-way (\(countAtPause) counts)")
        #expect(!eventually(seconds: 0.2) { printed(origin).count != countAtPause }, "a paused machine prints nothing")

        let folder = NSTemporaryDirectory() + "hyperctl-microvm-snapshot-\(getpid())"
        defer { HostSystem.removeTree(folder) }
        try origin.captureSnapshot().write(to: folder, memory: origin.memory)

        // The original goes on to the end.
        try origin.resume()
        #expect(eventually(seconds: 60) { ended.value != nil })
        origin.stop()
        #expect(try ended.value?.get() == .reset)
        let whole = TinyGuest.countingOutput(limit: Self.limit)
        #expect(printed(origin) == whole)

        // Two clones, each from the count the original had when paused, independently.
        for _ in 0..<2 {
            let snapshot = try MachineSnapshot.read(from: folder)
            let clone = try MicroVM(restoring: snapshot, memory: MachineSnapshot.mapMemory(from: folder, snapshot: snapshot),
                                    devices: [entropy()], console: ConsoleLog(), on: KVMHypervisor())
            #expect(clone.transports[0].state == origin.transports[0].state)
            #expect(try runToEnd(clone) == .reset)
            #expect(printed(clone) == String(whole.dropFirst(countAtPause)))
        }
    }

    @Test func aSnapshotNeedsThePausedMachineAndMatchingDevices() throws {
        let configuration = MicroVM.Configuration(kernel: TinyGuest.countingImage(limit: Self.limit), kernelName: "counting guest", initrd: nil,
                                                  commandLine: "", memoryBytes: 64 << 20, vcpus: 1)
        let vm = try MicroVM(configuration, devices: [entropy()], console: ConsoleLog(), on: KVMHypervisor())
        try vm.start { _ in }
        #expect(throws: HyperError.self) { _ = try vm.captureSnapshot() }
        try vm.pause()
        let snapshot = try vm.captureSnapshot()
        vm.stop()
        // Restored with another device in the virtio slot, or none, it is refused.
        let block = VirtioBlock(storage: FileBlockStorage(descriptor: try HostSystem.createAnonymousFile(in: NSTemporaryDirectory(), size: 1 << 20), size: 1 << 20),
                                readOnly: false)
        #expect(throws: HyperError.self) {
            _ = try MicroVM(restoring: snapshot, memory: GuestMemory(size: 64 << 20), devices: [block], console: ConsoleLog(), on: KVMHypervisor())
        }
        // The transport's state survives its encoding.
        let state = try #require(snapshot.devices["virtio.0"])
        #expect(VirtioMMIOTransport.State(encoded: state)?.encoded == state)
        #expect(VirtioMMIOTransport.State(encoded: Array(state.dropLast())) == nil)
    }
}
