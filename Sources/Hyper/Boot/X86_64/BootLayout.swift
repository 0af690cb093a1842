/// Where the x86-64 boot structures live in guest-physical memory (the layout Firecracker uses).
public enum BootLayout {
    /// The boot GDT: null, 32-bit code, data, TSS (and a 64-bit code descriptor for long-mode entry).
    public static let gdtAddress: UInt64 = 0x500
    /// An empty IDT: interrupts stay disabled until the guest loads its own.
    public static let idtAddress: UInt64 = 0x520
    /// PVH `hvm_start_info`.
    public static let startInfoAddress: UInt64 = 0x6000
    /// PVH module list (the initrd).
    public static let moduleListAddress: UInt64 = 0x6040
    /// PVH memory map (E820-style entries).
    public static let memoryMapAddress: UInt64 = 0x7000
    /// Boot stack top.
    public static let stackTop: UInt64 = 0x8FF0
    /// Identity page tables for a long-mode entry: PML4, PDPT and one page directory of 2 MiB pages (1 GiB).
    public static let pml4Address: UInt64 = 0x9000
    public static let pdptAddress: UInt64 = 0xA000
    public static let pageDirectoryAddress: UInt64 = 0xB000
    /// The kernel command line, NUL-terminated.
    public static let commandLineAddress: UInt64 = 0x20000
    /// The command line's maximum size, NUL included.
    public static let commandLineCapacity = 2048
    /// End of low RAM: the last KiB below 640 KiB and the legacy BIOS area are reserved.
    public static let lowMemoryEnd: UInt64 = 0x9FC00
    /// Where kernels load (1 MiB).
    public static let highMemoryStart: UInt64 = 0x10_0000
    /// COM1.
    public static let serialPort: UInt16 = 0x3F8
    public static let serialInterrupt: UInt32 = 4
    /// The i8042's window (data at 0x60, command/status at 0x64).
    public static let i8042Port: UInt16 = 0x60

    /// GDT selectors.
    public static let codeSelector32: UInt16 = 0x08
    public static let dataSelector: UInt16 = 0x10
    public static let tssSelector: UInt16 = 0x18
    public static let codeSelector64: UInt16 = 0x20

    /// The boot GDT's descriptors, in order.
    public static let gdtEntries: [UInt64] = [
        0,
        0x00CF_9B00_0000_FFFF,  // 32-bit code, base 0, limit 4 GiB
        0x00CF_9300_0000_FFFF,  // data, base 0, limit 4 GiB
        0x0000_8B00_0000_0067,  // 32-bit TSS (busy), base 0
        0x00AF_9B00_0000_FFFF,  // 64-bit code
    ]

    /// Writes the GDT and an empty IDT.
    public static func writeDescriptorTables(into memory: GuestMemory) throws(HyperError) {
        for (index, entry) in gdtEntries.enumerated() {
            try memory.write(entry, at: gdtAddress + UInt64(index * 8))
        }
        try memory.write(UInt64(0), at: idtAddress)
    }

    /// Writes page tables that identity-map the first GiB with 2 MiB pages.
    public static func writeIdentityPageTables(into memory: GuestMemory) throws(HyperError) {
        let presentWritable: UInt64 = 0x3, largePage: UInt64 = 0x80
        try memory.write(pdptAddress | presentWritable, at: pml4Address)
        try memory.write(pageDirectoryAddress | presentWritable, at: pdptAddress)
        for index in 0..<UInt64(512) {
            try memory.write((index << 21) | presentWritable | largePage, at: pageDirectoryAddress + index * 8)
        }
    }

    /// Segment and control registers for a 64-bit entry: long mode, paging through the identity tables.
    public static func longModeRegisters() -> X86SpecialRegisters {
        var registers = protectedModeRegisters()
        registers.cs = .flat(selector: codeSelector64, type: 0xB, long: true)
        registers.cr3 = pml4Address
        registers.cr4 = 0x20                 // PAE
        registers.cr0 = 0x8000_0011          // PG | ET | PE
        registers.efer = 0x500               // LME | LMA
        return registers
    }

    /// Segment and control registers for a 32-bit protected-mode entry with flat segments (PVH).
    public static func protectedModeRegisters() -> X86SpecialRegisters {
        var registers = X86SpecialRegisters()
        registers.cs = .flat(selector: codeSelector32, type: 0xB)
        let data = X86Segment.flat(selector: dataSelector, type: 0x3)
        registers.ds = data
        registers.es = data
        registers.fs = data
        registers.gs = data
        registers.ss = data
        var taskRegister = X86Segment()
        taskRegister.selector = tssSelector
        taskRegister.type = 0xB
        taskRegister.present = true
        taskRegister.limit = 0x67
        taskRegister.codeOrData = false
        registers.tr = taskRegister
        registers.ldt.unusable = true
        registers.ldt.codeOrData = false
        registers.ldt.type = 0x2
        registers.gdt = X86DescriptorTable(base: gdtAddress, limit: UInt16(gdtEntries.count * 8 - 1))
        registers.idt = X86DescriptorTable(base: idtAddress, limit: 7)
        registers.cr0 = 0x11  // PE | ET
        return registers
    }
}
