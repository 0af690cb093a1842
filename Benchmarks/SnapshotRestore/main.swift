// snapshot-restore: a tiny guest's way to its next instruction, cold (load the image, create the VM and
// vCPU, set the boot state) against restored from a snapshot folder (read and check the state, map the
// memory copy-on-write, create the VM and vCPU, restore their state). Both run until the guest's next byte
// on COM1, on this host's /dev/kvm; rounds are interleaved and medians reported with the ratio.
//
//     swift run -c release snapshot-restore [ROUNDS]
import Hyper
import HyperKVM

let rounds = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 50
let memorySize: UInt64 = 64 << 20
let image = TinyGuest.countingImage(limit: 1000)

/// The serial port writes on the vCPU's thread, the one that reads the bus's requested exit.
struct BusReference: @unchecked Sendable { let bus: MachineBus }

/// A VM with COM1 and the i8042 on `memory`, whose run stops at the first byte the guest prints after `skip`.
func machine(_ memory: GuestMemory, stopAfter count: Int) throws(HyperError) -> (any VirtualMachine, any VirtualCPU, MachineBus, Serial16550) {
    let vm = try KVMHypervisor().makeVirtualMachine(memory: memory)
    let vcpu = try vm.makeVCPU(index: 0)
    let bus = MachineBus()
    let reference = BusReference(bus: bus)
    let printed = Locked(0)
    let serial = try RawMachine.mapLegacyDevices(on: bus, machine: vm) { bytes in
        let total = printed.withLock { value in
            value += bytes.count
            return value
        }
        if total >= count { reference.bus.requestedExit = .stopped }
    }
    return (vm, vcpu, bus, serial)
}

/// Boots the counting guest cold and runs it until it printed `count` bytes; returns the machine.
func bootCold(stopAfter count: Int) throws(HyperError) -> (GuestMemory, any VirtualMachine, any VirtualCPU, Serial16550) {
    let memory = try GuestMemory(size: memorySize)
    let entry = try GuestLoader.load(kernel: image, kernelName: "counting guest", initrd: nil, commandLine: "", into: memory, vcpus: 1, virtioDevices: [])
    let (vm, vcpu, bus, serial) = try machine(memory, stopAfter: count)
    try vcpu.setSpecialRegisters(entry.specialRegisters)
    try vcpu.setRegisters(entry.registers)
    _ = try vcpu.run(bus: bus, deadline: nil)
    return (memory, vm, vcpu, serial)
}

func cold() throws(HyperError) -> UInt64 {
    let start = HostSystem.monotonicNanoseconds()
    _ = try bootCold(stopAfter: 1)
    return HostSystem.monotonicNanoseconds() - start
}

/// Restores the snapshot in `folder` and runs it to its next byte; adds each step's time to `phases`.
func restored(from folder: String, phases: inout [String: [UInt64]]) throws(HyperError) -> UInt64 {
    let start = HostSystem.monotonicNanoseconds()
    var last = start
    func mark(_ name: String) {
        let now = HostSystem.monotonicNanoseconds()
        phases[name, default: []].append(now - last)
        last = now
    }
    let snapshot = try MachineSnapshot.read(from: folder)
    mark("read")
    let memory = try MachineSnapshot.mapMemory(from: folder, snapshot: snapshot)
    mark("map")
    let (vm, vcpu, bus, serial) = try machine(memory, stopAfter: 1)
    mark("create")
    try vm.restoreState(snapshot.machine)
    mark("vm")
    try vcpu.restoreState(snapshot.vcpus[0])
    mark("vcpu")
    if let state = snapshot.devices["serial"].flatMap({ Serial16550.State(encoded: $0) }) { serial.restore(state) }
    _ = try vcpu.run(bus: bus, deadline: nil)
    mark("run")
    return HostSystem.monotonicNanoseconds() - start
}

func median(_ values: [UInt64]) -> Double { Double(values.sorted()[values.count / 2]) / 1e6 }
func p90(_ values: [UInt64]) -> Double { Double(values.sorted()[min(values.count - 1, values.count * 9 / 10)]) / 1e6 }
func shown(_ milliseconds: Double) -> String {
    let hundredths = Int((milliseconds * 100).rounded())
    return "\(hundredths / 100).\(hundredths % 100 < 10 ? "0" : "")\(hundredths % 100) ms"
}

do throws(HyperError) {
    // The snapshot: the guest stopped after 100 counts, written to a folder.
    let (memory, vm, vcpu, serial) = try bootCold(stopAfter: 100)
    let folder = "/tmp/hyperctl-snapshot-bench-\(HostSystem.processID)"
    HostSystem.removeQuietly(folder + "/memory")
    HostSystem.removeQuietly(folder + "/state")
    HostSystem.removeTree(folder)
    try MachineSnapshot.capture(machine: vm, vcpus: [vcpu], devices: ["serial": serial.state.encoded]).write(to: folder, memory: memory)
    defer { HostSystem.removeTree(folder) }

    var coldTimes: [UInt64] = []
    var restoreTimes: [UInt64] = []
    var phases: [String: [UInt64]] = [:]
    var warmUpPhases: [String: [UInt64]] = [:]
    for round in 0..<(rounds + 3) {
        let a = try cold()
        let b = round >= 3 ? try restored(from: folder, phases: &phases) : try restored(from: folder, phases: &warmUpPhases)
        if round >= 3 {  // Three warm-up rounds.
            coldTimes.append(a)
            restoreTimes.append(b)
        }
    }
    let ratio = median(restoreTimes) / median(coldTimes)
    let percent = Int((ratio * 100).rounded())
    print("tiny guest, \(memorySize >> 20) MiB, \(rounds) interleaved rounds, to its next byte on COM1:")
    print("  cold boot        median \(shown(median(coldTimes)))  p90 \(shown(p90(coldTimes)))")
    print("  snapshot restore median \(shown(median(restoreTimes)))  p90 \(shown(p90(restoreTimes)))  (\(percent)% of cold)")
    let steps = ["read", "map", "create", "vm", "vcpu", "run"].map { "\($0) \(shown(median(phases[$0] ?? [0])))" }
    print("    restore steps (medians): " + steps.joined(separator: ", "))
} catch {
    print("snapshot-restore: \(error.message)")
}
