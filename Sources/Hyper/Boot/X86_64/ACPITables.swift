/// The ACPI tables of a hardware-reduced microVM: RSDP, XSDT, FADT, MADT and a DSDT (our own AML) describing
/// COM1 and each virtio-mmio device (`LNRO0005`), since this guest kernel cannot take virtio-mmio devices from
/// its command line.
public enum ACPITables {
    /// Where the RSDP goes (the BIOS area a kernel scans, and what the boot data points at).
    public static let rsdpAddress: UInt64 = 0xE0000
    /// Where the other tables start.
    static let tablesAddress: UInt64 = 0xE1000
    /// The IOAPIC and local APIC windows.
    public static let ioAPICAddress: UInt32 = 0xFEC0_0000
    public static let localAPICAddress: UInt32 = 0xFEE0_0000
    static let oemID = Array("HYPERC".utf8)
    static let oemTableID = Array("HYPERCTL".utf8)

    /// A virtio-mmio device to describe: its register window and interrupt.
    public struct VirtioDevice: Equatable, Sendable {
        public var base: UInt32
        public var length: UInt32
        public var interrupt: UInt32

        /// Creates a description.
        public init(base: UInt32, length: UInt32 = 0x200, interrupt: UInt32) {
            self.base = base
            self.length = length
            self.interrupt = interrupt
        }
    }

    /// Returns the DSDT's AML body.
    public static func dsdtBody(virtioDevices: [VirtioDevice]) -> [UInt8] {
        var devices: [AML.Term] = [
            AML.device("COM1", [
                AML.name("_HID", AML.string("PNP0501")),
                AML.name("_UID", AML.integer(0)),
                AML.name("_CRS", AML.resourceTemplate([AML.io(base: BootLayout.serialPort, length: 8), AML.irq(UInt8(BootLayout.serialInterrupt))])),
            ]),
        ]
        for (index, device) in virtioDevices.enumerated() {
            let name = "V" + String(repeating: "0", count: max(0, 3 - String(index).count)) + String(index)
            devices.append(AML.device(name, [
                AML.name("_HID", AML.string("LNRO0005")),
                AML.name("_UID", AML.integer(UInt64(index))),
                AML.name("_CRS", AML.resourceTemplate([AML.memory32Fixed(base: device.base, length: device.length), AML.interrupt(device.interrupt)])),
            ]))
        }
        return AML.scope("\\_SB_", devices).bytes
    }

    /// Writes every table into guest memory and returns the RSDP's address.
    public static func write(into memory: GuestMemory, vcpus: Int, virtioDevices: [VirtioDevice]) throws(HyperError) -> UInt64 {
        var cursor = tablesAddress
        func place(_ table: [UInt8]) throws(HyperError) -> UInt64 {
            let address = cursor
            try memory.write(table, at: address)
            cursor = (cursor + UInt64(table.count) + 15) & ~15
            return address
        }
        let dsdt = try place(table("DSDT", revision: 2, body: dsdtBody(virtioDevices: virtioDevices)))
        let fadt = try place(table("FACP", revision: 6, body: fadtBody(dsdt: dsdt)))
        let madt = try place(table("APIC", revision: 4, body: madtBody(vcpus: vcpus)))
        let xsdt = try place(table("XSDT", revision: 1, body: [fadt, madt].flatMap { AML.littleEndian($0, 8) }))
        try memory.write(rsdp(xsdt: xsdt), at: rsdpAddress)
        return rsdpAddress
    }

    /// A table: the 36-byte header (with a checksum that makes the bytes sum to zero) and the body.
    static func table(_ signature: String, revision: UInt8, body: [UInt8]) -> [UInt8] {
        var bytes = Array(signature.utf8) + AML.littleEndian(UInt64(36 + body.count), 4) + [revision, 0]
        bytes += oemID + oemTableID + AML.littleEndian(1, 4) + Array("HYPR".utf8) + AML.littleEndian(1, 4)
        bytes += body
        bytes[9] = checksum(bytes)
        return bytes
    }

    /// The RSDP (ACPI 2.0+, 36 bytes) pointing at the XSDT.
    static func rsdp(xsdt: UInt64) -> [UInt8] {
        var bytes = Array("RSD PTR ".utf8) + [0] + oemID + [2] + AML.littleEndian(0, 4)
        bytes += AML.littleEndian(36, 4) + AML.littleEndian(xsdt, 8) + [0, 0, 0, 0]
        bytes[8] = checksum(Array(bytes[0..<20]))
        bytes[32] = checksum(bytes)
        return bytes
    }

    /// The FADT body after the header: hardware-reduced, pointing at the DSDT through X_DSDT.
    static func fadtBody(dsdt: UInt64) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: 276 - 36)
        func put(_ value: UInt64, _ count: Int, at offset: Int) { body.replaceSubrange(offset - 36..<offset - 36 + count, with: AML.littleEndian(value, count)) }
        put(1 << 20, 4, at: 112)            // Flags: HW_REDUCED_ACPI
        put(1 << 2, 2, at: 109)             // IAPC_BOOT_ARCH: VGA not present
        body[131 - 36] = 5                  // FADT minor version (6.5)
        put(dsdt, 8, at: 140)               // X_DSDT
        put(UInt64(Array("HYPERCTL".utf8).enumerated().reduce(0) { $0 | UInt64($1.element) << UInt64($1.offset * 8) }), 8, at: 268)  // hypervisor vendor
        return body
    }

    /// The MADT body: the local APIC address, one local APIC per vCPU and one IOAPIC.
    static func madtBody(vcpus: Int) -> [UInt8] {
        var body = AML.littleEndian(UInt64(localAPICAddress), 4) + AML.littleEndian(0, 4)
        for index in 0..<vcpus { body += [0, 8, UInt8(index), UInt8(index)] + AML.littleEndian(1, 4) }  // enabled
        body += [1, 12, 0, 0] + AML.littleEndian(UInt64(ioAPICAddress), 4) + AML.littleEndian(0, 4)
        return body
    }

    static func checksum(_ bytes: [UInt8]) -> UInt8 {
        UInt8(truncatingIfNeeded: 0x100 - Int(bytes.reduce(UInt8(0)) { $0 &+ $1 }))
    }
}
