import Foundation
import Testing
@testable import Hyper

/// Whether acpica-tools' disassembler is installed.
let iaslAvailable = FileManager.default.isExecutableFile(atPath: "/usr/bin/iasl")

@Suite("ACPI tables and AML")
struct ACPITests {
    let devices = [ACPITables.VirtioDevice(base: 0xD000_0000, interrupt: 5), ACPITables.VirtioDevice(base: 0xD000_1000, interrupt: 6)]

    /// Reads a table's bytes at `address` using its length field.
    func table(_ memory: GuestMemory, at address: UInt64) throws -> [UInt8] {
        let length = try memory.read(UInt32.self, at: address + 4)
        return try memory.read(Int(length), at: address)
    }

    @Test func tablesChainFromTheRSDPAndChecksumToZero() throws {
        let memory = try GuestMemory(size: 2 << 20)
        let rsdpAddress = try ACPITables.write(into: memory, vcpus: 2, virtioDevices: devices)
        let rsdp = try memory.read(36, at: rsdpAddress)
        #expect(Array(rsdp[0..<8]) == Array("RSD PTR ".utf8))
        #expect(rsdp[0..<20].reduce(UInt8(0), &+) == 0 && rsdp.reduce(UInt8(0), &+) == 0)
        let xsdt = try table(memory, at: try memory.read(UInt64.self, at: rsdpAddress + 24))
        #expect(Array(xsdt[0..<4]) == Array("XSDT".utf8) && xsdt.reduce(UInt8(0), &+) == 0)
        var signatures: [String] = []
        for index in 0..<((xsdt.count - 36) / 8) {
            let pointer = (0..<8).reduce(UInt64(0)) { $0 | UInt64(xsdt[36 + index * 8 + $1]) << UInt64($1 * 8) }
            let entry = try table(memory, at: pointer)
            #expect(entry.reduce(UInt8(0), &+) == 0, "checksum of \(String(decoding: entry[0..<4], as: UTF8.self))")
            signatures.append(String(decoding: entry[0..<4], as: UTF8.self))
            if signatures.last == "FACP" {
                let dsdtPointer = (0..<8).reduce(UInt64(0)) { $0 | UInt64(entry[140 + $1]) << UInt64($1 * 8) }
                let dsdt = try table(memory, at: dsdtPointer)
                #expect(Array(dsdt[0..<4]) == Array("DSDT".utf8) && dsdt.reduce(UInt8(0), &+) == 0)
                #expect(entry[112 + 2] & 0x10 != 0, "HW_REDUCED_ACPI")
            }
            if signatures.last == "APIC" {
                #expect(entry.count == 44 + 2 * 8 + 12, "two local APICs and one IOAPIC")
            }
        }
        #expect(signatures == ["FACP", "APIC"])
    }

    @Test func packageLengthsUseTheRightEncoding() {
        #expect(AML.packageLength([UInt8](repeating: 0, count: 10)).first == 11)
        let medium = AML.packageLength([UInt8](repeating: 0, count: 100))
        #expect(medium[0] >> 6 == 1 && (Int(medium[0] & 0x0F) | Int(medium[1]) << 4) == 102)
        #expect(AML.nameString("\\_SB_.COM1") == [0x5C, 0x2E] + Array("_SB_COM1".utf8))
        #expect(AML.integer(0x1234).bytes == [0x0B, 0x34, 0x12])
    }

    @Test func virtioInterruptsAreEdgeTriggeredActiveHigh() {
        let descriptor = AML.interrupt(5)
        #expect(descriptor[0] == 0x89 && descriptor[3] & 0x01 == 0x01, "a consumer")
        #expect(descriptor[3] & 0x02 == 0x02, "edge-triggered: a pulsed line must not be level")
        #expect(descriptor[3] & 0x0C == 0, "active high, exclusive")
        #expect(Array(descriptor[5...]) == [5, 0, 0, 0])
    }

    @Test(.enabled(if: iaslAvailable, "needs iasl from acpica-tools"))
    func iaslDisassemblesTheGeneratedTables() throws {
        let memory = try GuestMemory(size: 2 << 20)
        let rsdpAddress = try ACPITables.write(into: memory, vcpus: 1, virtioDevices: devices)
        let xsdt = try table(memory, at: try memory.read(UInt64.self, at: rsdpAddress + 24))
        let fadtAddress = (0..<8).reduce(UInt64(0)) { $0 | UInt64(xsdt[36 + $1]) << UInt64($1 * 8) }
        let fadt = try table(memory, at: fadtAddress)
        let dsdtAddress = (0..<8).reduce(UInt64(0)) { $0 | UInt64(fadt[140 + $1]) << UInt64($1 * 8) }
        let folder = NSTemporaryDirectory() + "hyperctl-acpi-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var texts: [String: String] = [:]
        for (name, bytes) in [("dsdt", try table(memory, at: dsdtAddress)), ("facp", fadt), ("xsdt", xsdt)] {
            try Data(bytes).write(to: URL(fileURLWithPath: "\(folder)/\(name).dat"))
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/iasl")
            process.arguments = ["-d", "\(folder)/\(name).dat"]
            process.currentDirectoryURL = URL(fileURLWithPath: folder)
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "iasl -d \(name)")
            texts[name] = try String(contentsOfFile: "\(folder)/\(name).dsl", encoding: .utf8)
        }
        let dsdt = texts["dsdt"] ?? ""
        #expect(dsdt.contains("Device (COM1)") && dsdt.contains("\"PNP0501\""))
        #expect(dsdt.contains("Device (V000)") && dsdt.contains("Device (V001)") && dsdt.contains("\"LNRO0005\""))
        #expect(dsdt.contains("IO (Decode16") && dsdt.contains("0x03F8") && dsdt.contains("IRQNoFlags"))
        #expect(dsdt.contains("Memory32Fixed (ReadWrite") && dsdt.contains("0xD0001000"))
        #expect(dsdt.contains("Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive"), "virtio lines are pulsed: edge-triggered")
        let fadtText = texts["facp"] ?? ""
        let flagLines = fadtText.split(separator: "\n").filter { $0.contains("Reduced") || $0.contains("Flags (decoded") }
        #expect(fadtText.contains("Hardware Reduced (V5) : 1"), "\(flagLines)")
        #expect(!(texts.values.contains { $0.contains("Invalid") || $0.contains("**** Unknown") }))
    }
}
