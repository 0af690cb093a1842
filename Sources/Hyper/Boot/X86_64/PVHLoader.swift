/// Loads an ELF kernel and writes the `hvm_start_info` a PVH kernel boots with. An image with the Xen PVH
/// entry note enters in 32-bit protected mode at that entry; a 64-bit image without it enters in long mode at
/// its ELF entry point.
///
/// The image is untrusted input: every header field, offset and size is checked against the file and the
/// guest memory before anything is copied.
public enum PVHLoader {
    /// `XEN_ELFNOTE_PHYS32_ENTRY`.
    static let physicalEntryNote: UInt32 = 18
    /// `hvm_start_info.magic`.
    public static let startInfoMagic: UInt32 = 0x336E_C578

    /// What loading produced.
    public struct LoadedKernel: Equatable, Sendable {
        /// How the kernel is entered.
        public enum Entry: Equatable, Sendable {
            /// 32-bit protected mode at this physical address, `rbx` pointing at `hvm_start_info`.
            case pvh(UInt32)
            /// 64-bit long mode at this address, with identity-mapped page tables.
            case long(UInt64)
        }

        public var entry: Entry
        /// The first byte past the highest loaded segment.
        public var end: UInt64
    }

    /// Returns whether `image` starts with the ELF magic.
    public static func isELF(_ image: [UInt8]) -> Bool { image.count >= 4 && Array(image[0..<4]) == [0x7F, 0x45, 0x4C, 0x46] }

    /// Copies the image's loadable segments into guest memory and returns its PVH entry.
    /// - Throws: `invalidArgument` naming what is wrong with the image.
    public static func load(_ image: [UInt8], into memory: GuestMemory) throws(HyperError) -> LoadedKernel {
        func bad(_ why: String) -> HyperError { HyperError(.invalidArgument, "kernel: not a bootable PVH ELF image: \(why)") }
        let reader = ByteReader(image)
        guard isELF(image), image.count >= 52 else { throw bad("no ELF header") }
        let is64 = image[4] == 2
        guard image[4] == 1 || is64 else { throw bad("unknown ELF class \(image[4])") }
        guard image[5] == 1 else { throw bad("not little-endian") }
        let machine = try reader.u16(18)
        guard machine == 3 || machine == 62 else { throw bad("machine \(machine) is not x86") }
        let headerOffset = is64 ? try reader.u64(32) : UInt64(try reader.u32(28))
        let headerSize = UInt64(try reader.u16(is64 ? 54 : 42))
        let headerCount = UInt64(try reader.u16(is64 ? 56 : 44))
        guard headerSize >= (is64 ? 56 : 32), headerCount > 0, headerCount <= 64 else { throw bad("program header table is malformed") }
        var entry: UInt32?
        var end: UInt64 = 0
        for index in 0..<headerCount {
            let (offsetOfHeader, overflow) = headerOffset.addingReportingOverflow(index * headerSize)
            guard !overflow else { throw bad("program header offset overflows") }
            let type = try reader.u32(offsetOfHeader)
            let fileOffset = is64 ? try reader.u64(offsetOfHeader + 8) : UInt64(try reader.u32(offsetOfHeader + 4))
            let physical = is64 ? try reader.u64(offsetOfHeader + 24) : UInt64(try reader.u32(offsetOfHeader + 12))
            let fileSize = is64 ? try reader.u64(offsetOfHeader + 32) : UInt64(try reader.u32(offsetOfHeader + 16))
            let memorySize = is64 ? try reader.u64(offsetOfHeader + 40) : UInt64(try reader.u32(offsetOfHeader + 20))
            switch type {
            case 1:  // PT_LOAD
                guard fileSize <= memorySize else { throw bad("segment \(index) has a file size above its memory size") }
                guard physical >= BootLayout.highMemoryStart else {
                    throw bad("segment \(index) loads at 0x\(String(physical, radix: 16)), below 1 MiB")
                }
                guard memory.contains(physical, count: memorySize) else {
                    throw bad("segment \(index) (0x\(String(physical, radix: 16)), \(memorySize) bytes) does not fit in \(Units.formatSize(memory.size)) of guest memory")
                }
                let bytes = try reader.slice(fileOffset, count: fileSize)
                try memory.write(bytes, at: physical)
                try memory.zero(Int(memorySize - fileSize), at: physical + fileSize)
                end = max(end, physical + memorySize)
            case 4:  // PT_NOTE
                if let found = try findEntryNote(reader, offset: fileOffset, size: fileSize) { entry = found }
            default:
                break
            }
        }
        guard end > 0 else { throw bad("no loadable segment") }
        if let entry { return LoadedKernel(entry: .pvh(entry), end: end) }
        guard is64 else { throw bad("a 32-bit image without a Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)") }
        let elfEntry = try reader.u64(24)
        guard elfEntry >= BootLayout.highMemoryStart, elfEntry < end else {
            throw bad("entry point 0x\(String(elfEntry, radix: 16)) lies outside the loaded segments")
        }
        return LoadedKernel(entry: .long(elfEntry), end: end)
    }

    static func findEntryNote(_ reader: ByteReader, offset: UInt64, size: UInt64) throws(HyperError) -> UInt32? {
        var position = offset
        let (limit, overflow) = offset.addingReportingOverflow(size)
        guard !overflow else { return nil }
        func aligned(_ value: UInt64) -> UInt64 { (value + 3) & ~3 }
        while position + 12 <= limit {
            let nameSize = UInt64(try reader.u32(position))
            let descriptionSize = UInt64(try reader.u32(position + 4))
            let type = try reader.u32(position + 8)
            guard nameSize <= 256, descriptionSize <= 4096 else { return nil }
            let name = try reader.slice(position + 12, count: nameSize)
            let description = position + 12 + aligned(nameSize)
            if type == physicalEntryNote, name.starts(with: Array("Xen".utf8)), descriptionSize >= 4 {
                return try reader.u32(description)
            }
            position = description + aligned(descriptionSize)
        }
        return nil
    }

    /// Writes the command line, the memory map, the initrd module and `hvm_start_info`; returns its address.
    public static func writeStartInfo(into memory: GuestMemory, commandLine: String, initrd: (address: UInt64, size: UInt64)?,
                                      rsdp: UInt64 = 0) throws(HyperError) -> UInt64 {
        var line = Array(commandLine.utf8)
        guard line.count < BootLayout.commandLineCapacity, !line.contains(0) else {
            throw HyperError(.invalidArgument, "cmdline: longer than \(BootLayout.commandLineCapacity - 1) bytes or contains NUL")
        }
        line.append(0)
        try memory.write(line, at: BootLayout.commandLineAddress)
        let regions: [(UInt64, UInt64)] = [(0, BootLayout.lowMemoryEnd), (BootLayout.highMemoryStart, memory.size - BootLayout.highMemoryStart)]
        for (index, region) in regions.enumerated() {
            let entry = BootLayout.memoryMapAddress + UInt64(index * 24)
            try memory.write(region.0, at: entry)
            try memory.write(region.1, at: entry + 8)
            try memory.write(UInt32(1), at: entry + 16)  // RAM
            try memory.write(UInt32(0), at: entry + 20)
        }
        if let initrd {
            try memory.write(initrd.address, at: BootLayout.moduleListAddress)
            try memory.write(initrd.size, at: BootLayout.moduleListAddress + 8)
            try memory.write(UInt64(0), at: BootLayout.moduleListAddress + 16)
            try memory.write(UInt64(0), at: BootLayout.moduleListAddress + 24)
        }
        let info = BootLayout.startInfoAddress
        try memory.write(startInfoMagic, at: info)
        try memory.write(UInt32(1), at: info + 4)  // version
        try memory.write(UInt32(0), at: info + 8)  // flags
        try memory.write(UInt32(initrd == nil ? 0 : 1), at: info + 12)
        try memory.write(initrd == nil ? UInt64(0) : BootLayout.moduleListAddress, at: info + 16)
        try memory.write(BootLayout.commandLineAddress, at: info + 24)
        try memory.write(rsdp, at: info + 32)
        try memory.write(BootLayout.memoryMapAddress, at: info + 40)
        try memory.write(UInt32(regions.count), at: info + 48)
        try memory.write(UInt32(0), at: info + 52)
        return info
    }
}

/// Bounds-checked little-endian reads from an untrusted byte array.
struct ByteReader {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func slice(_ offset: UInt64, count: UInt64) throws(HyperError) -> [UInt8] {
        let (end, overflow) = offset.addingReportingOverflow(count)
        guard !overflow, end <= UInt64(bytes.count) else {
            throw HyperError(.invalidArgument, "kernel: image is truncated (needs bytes up to \(end), has \(bytes.count))")
        }
        return Array(bytes[Int(offset)..<Int(end)])
    }

    func integer<T: FixedWidthInteger>(_ offset: UInt64, as type: T.Type) throws(HyperError) -> T {
        try slice(offset, count: UInt64(MemoryLayout<T>.size)).enumerated().reduce(T.zero) { $0 | T($1.element) << T($1.offset * 8) }
    }

    func u16(_ offset: UInt64) throws(HyperError) -> UInt16 { try integer(offset, as: UInt16.self) }
    func u32(_ offset: UInt64) throws(HyperError) -> UInt32 { try integer(offset, as: UInt32.self) }
    func u64(_ offset: UInt64) throws(HyperError) -> UInt64 { try integer(offset, as: UInt64.self) }
}
