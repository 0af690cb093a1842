import Hyper
import HyperKVM

/// `hyperctl bench snapshot`: a tiny guest on this host's /dev/kvm, cold against restored from a snapshot.
///
/// - **Restore against cold boot**: cold is load the image, create the VM and vCPU, set the boot state;
///   restored is read and check the snapshot folder, map its memory copy-on-write, create the VM and vCPU,
///   restore their state. Both run until the guest's next byte on COM1. Rounds are interleaved; medians,
///   p90s and the ratio are reported, with the restore's own steps.
/// - **Memory of ten clones**: ten machines restored from one snapshot against ten cold boots, all kept
///   alive in this process, measured from `/proc/self/smaps_rollup`: the resident set they add, and the
///   private part (what is not shared page cache), which is what each clone really costs.
///
/// The counting guest has no boot to skip, so the ratio shows the restore path's overhead; a Linux guest's
/// restore skips its whole boot (`--guest kit`, `KitSnapshotBench`, measures that).
struct SnapshotBench {
    static let memorySize: UInt64 = 64 << 20
    static let cloneCount = 10

    /// The results, as the table and the JSON show them.
    struct Results {
        var cold: RowFigures
        var restored: RowFigures
        var restoreSteps: [(String, Double)]
        var coldMemory: MemoryUse
        var cloneMemory: MemoryUse
        var ratio: Double { cold.median > 0 ? restored.median / cold.median : 0 }
    }

    /// What a set of machines added to this process, in KiB.
    struct MemoryUse {
        var resident: Int
        var privateResident: Int
    }

    private let image = TinyGuest.countingImage(limit: 1000)
    private let hypervisor = KVMHypervisor()

    /// One machine: the VM, its vCPU, COM1 and the bus, over `memory`; its run stops at the first byte.
    private struct Machine {
        var memory: GuestMemory
        var vm: any VirtualMachine
        var vcpu: any VirtualCPU
        var bus: MachineBus
        var serial: Serial16550
    }

    /// The serial port writes on the vCPU's thread, the one that reads the bus's requested exit.
    private struct BusReference: @unchecked Sendable { let bus: MachineBus }

    private func machine(on memory: GuestMemory, stopAfter count: Int) throws(HyperError) -> Machine {
        let vm = try hypervisor.makeVirtualMachine(memory: memory)
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
        return Machine(memory: memory, vm: vm, vcpu: vcpu, bus: bus, serial: serial)
    }

    /// Boots the counting guest cold and runs it until it printed `count` bytes.
    private func bootCold(stopAfter count: Int) throws(HyperError) -> Machine {
        let memory = try GuestMemory(size: Self.memorySize)
        let entry = try GuestLoader.load(kernel: image, kernelName: "counting guest", initrd: nil, commandLine: "", into: memory, vcpus: 1, virtioDevices: [])
        let machine = try machine(on: memory, stopAfter: count)
        try machine.vcpu.setSpecialRegisters(entry.specialRegisters)
        try machine.vcpu.setRegisters(entry.registers)
        _ = try machine.vcpu.run(bus: machine.bus, deadline: nil)
        return machine
    }

    /// Restores the snapshot in `folder` and runs it to its next byte; adds each step's time to `steps`.
    private func restore(from folder: String, steps: inout [String: [Double]]) throws(HyperError) -> Machine {
        var last = HostSystem.monotonicNanoseconds()
        func mark(_ name: String) {
            let now = HostSystem.monotonicNanoseconds()
            steps[name, default: []].append(Double(now - last) / 1e6)
            last = now
        }
        let snapshot = try MachineSnapshot.read(from: folder)
        mark("read")
        let memory = try MachineSnapshot.mapMemory(from: folder, snapshot: snapshot)
        mark("map")
        let machine = try machine(on: memory, stopAfter: 1)
        mark("create")
        try machine.vm.restoreState(snapshot.machine)
        mark("vm")
        try machine.vcpu.restoreState(snapshot.vcpus[0])
        mark("vcpu")
        if let state = snapshot.devices["serial"].flatMap({ Serial16550.State(encoded: $0) }) { machine.serial.restore(state) }
        _ = try machine.vcpu.run(bus: machine.bus, deadline: nil)
        mark("run")
        return machine
    }

    private func timed(_ body: () throws(HyperError) -> Machine) throws(HyperError) -> Double {
        let start = HostSystem.monotonicNanoseconds()
        _ = try body()
        return Double(HostSystem.monotonicNanoseconds() - start) / 1e6
    }

    /// Runs the benchmark with its snapshot in `folder` (made and removed here).
    func run(runs: Int, warmup: Int, folder: String, progress: (String) -> Void) throws(HyperError) -> Results {
        // The snapshot: the guest stopped after 100 counts.
        let origin = try bootCold(stopAfter: 100)
        HostSystem.removeTree(folder)
        try MachineSnapshot.capture(machine: origin.vm, vcpus: [origin.vcpu], devices: ["serial": origin.serial.state.encoded])
            .write(to: folder, memory: origin.memory)

        var cold: [Double] = []
        var restored: [Double] = []
        var steps: [String: [Double]] = [:]
        var warmUpSteps: [String: [Double]] = [:]
        for round in 0..<(warmup + runs) {
            progress("snapshot: round \(round + 1) of \(warmup + runs)\(round < warmup ? " (warm-up)" : "")")
            let coldTime = try timed { () throws(HyperError) in try bootCold(stopAfter: 1) }
            let restoreTime = try timed { () throws(HyperError) in
                round < warmup ? try restore(from: folder, steps: &warmUpSteps) : try restore(from: folder, steps: &steps)
            }
            guard round >= warmup else { continue }
            cold.append(coldTime)
            restored.append(restoreTime)
        }

        progress("snapshot: memory of \(Self.cloneCount) cold boots and \(Self.cloneCount) clones")
        let coldMemory = try memoryAdded { () throws(HyperError) in try (0..<Self.cloneCount).map { _ throws(HyperError) in try bootCold(stopAfter: 1) } }
        let cloneMemory = try memoryAdded { () throws(HyperError) in
            var ignored: [String: [Double]] = [:]
            return try (0..<Self.cloneCount).map { _ throws(HyperError) in try restore(from: folder, steps: &ignored) }
        }
        let order = ["read", "map", "create", "vm", "vcpu", "run"]
        return Results(cold: RowFigures(milliseconds: cold, peakResidentKiB: nil), restored: RowFigures(milliseconds: restored, peakResidentKiB: nil),
                       restoreSteps: order.map { ($0, RowFigures.quantile((steps[$0] ?? [0]).sorted(), 0.5)) },
                       coldMemory: coldMemory, cloneMemory: cloneMemory)
    }

    /// What the machines `make` returns add to this process's memory while they are all alive.
    private func memoryAdded(_ make: () throws(HyperError) -> [Machine]) throws(HyperError) -> MemoryUse {
        let before = Self.processMemory()
        let machines = try make()
        let after = Self.processMemory()
        withExtendedLifetime(machines) {}
        return MemoryUse(resident: max(0, after.resident - before.resident), privateResident: max(0, after.privateResident - before.privateResident))
    }

    /// A row's figures in the JSON output.
    static func figuresJSON(_ row: RowFigures) -> JSONValue {
        .object([("runs", .integer(Int32(row.runs))), ("medianMs", .number(row.median)), ("p90Ms", .number(row.p90)),
                 ("minMs", .number(row.minimum)), ("maxMs", .number(row.maximum))])
    }

    /// This process's resident and private resident memory, in KiB (`/proc/self/smaps_rollup`).
    static func processMemory() -> MemoryUse {
        var fields: [String: Int] = [:]
        for line in (HostSystem.readText("/proc/self/smaps_rollup") ?? "").split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, parts[0].hasSuffix(":"), let value = Int(parts[1]) else { continue }
            fields[String(parts[0].dropLast())] = value
        }
        return MemoryUse(resident: fields["Rss"] ?? 0, privateResident: (fields["Private_Clean"] ?? 0) + (fields["Private_Dirty"] ?? 0))
    }
}

extension SnapshotBench.Results {
    /// The human-readable report.
    var table: String {
        let show = { (value: Double) in ColdStartResults.format(value) + " ms" }
        var lines = ["tiny guest (\(SnapshotBench.memorySize >> 20) MiB) on /dev/kvm, \(cold.runs) interleaved rounds, to its next byte on COM1:"]
        lines.append("  cold boot         median \(show(cold.median))  p90 \(show(cold.p90))")
        lines.append("  snapshot restore  median \(show(restored.median))  p90 \(show(restored.p90))  ratio \(ColdStartResults.format(ratio)) of cold")
        lines.append("    restore steps (medians): " + restoreSteps.map { "\($0.0) \(show($0.1))" }.joined(separator: ", "))
        lines.append("memory added by \(SnapshotBench.cloneCount) machines alive at once:")
        lines.append("  cold boots  resident \(coldMemory.resident) KiB, private \(coldMemory.privateResident) KiB")
        lines.append("  clones      resident \(cloneMemory.resident) KiB, private \(cloneMemory.privateResident) KiB (shared pages come from the snapshot's page cache)")
        return lines.joined(separator: "\n") + "\n"
    }

    var json: JSONValue {
        let figures = SnapshotBench.figuresJSON
        let memory = { (use: SnapshotBench.MemoryUse) -> JSONValue in
            .object([("residentKiB", .integer(Int32(clamping: use.resident))), ("privateKiB", .integer(Int32(clamping: use.privateResident)))])
        }
        return .object([("guest", .string("tiny counting guest, \(SnapshotBench.memorySize >> 20) MiB")),
                        ("coldBoot", figures(cold)), ("restore", figures(restored)), ("restoreToColdRatio", .number(ratio)),
                        ("restoreStepMediansMs", .object(restoreSteps.map { ($0.0, .number($0.1)) })),
                        ("machines", .integer(Int32(SnapshotBench.cloneCount))),
                        ("coldBootsMemory", memory(coldMemory)), ("clonesMemory", memory(cloneMemory))])
    }
}
