/// Loads a Linux bzImage with the 64-bit boot protocol: checks the setup header, copies the protected-mode
/// kernel to 1 MiB, and builds the zero page (`boot_params`) with the command line, initrd and E820 map.
///
/// The image is untrusted input: every header field and size is checked before anything is copied.
public enum LinuxLoader {
    /// Where the zero page goes.
    public static let zeroPageAddress: UInt64 = 0x7000
    /// The oldest boot protocol with a usable 64-bit entry (2.12 added `xloadflags`).
    static let minimumProtocol: UInt16 = 0x020C

    /// Returns whether `image` has a bzImage setup header ("HdrS" at 0x202).
    public static func isBzImage(_ image: [UInt8]) -> Bool {
        image.count > 0x206 && Array(image[0x202..<0x206]) == Array("HdrS".utf8)
    }

    /// What loading produced.
    public struct LoadedKernel: Equatable, Sendable {
        /// The 64-bit entry: the load address plus 0x200.
        public var entry: UInt64
        /// The first byte past the kernel's decompression footprint.
        public var end: UInt64
        /// The setup header's protocol version.
        public var protocolVersion: UInt16
    }

    /// Copies the protected-mode kernel into memory at 1 MiB.
    public static func load(_ image: [UInt8], into memory: GuestMemory) throws(HyperError) -> LoadedKernel {
        func bad(_ why: String) -> HyperError { HyperError(.invalidArgument, "kernel: not a bootable bzImage: \(why)") }
        let reader = ByteReader(image)
        guard isBzImage(image), image.count >= 0x264 else { throw bad("no setup header") }
        guard try reader.u16(0x1FE) == 0xAA55 else { throw bad("boot flag is not 0xAA55") }
        let version = try reader.u16(0x206)
        guard version >= minimumProtocol else {
            throw bad("boot protocol \(version >> 8).\(version & 0xFF) is older than 2.12")
        }
        guard try reader.integer(0x211, as: UInt8.self) & 0x01 != 0 else { throw bad("not loaded high (LOADED_HIGH unset)") }
        guard try reader.u16(0x236) & 0x01 != 0 else { throw bad("no 64-bit entry (XLF_KERNEL_64 unset)") }
        var setupSectors = UInt64(try reader.integer(0x1F1, as: UInt8.self))
        if setupSectors == 0 { setupSectors = 4 }
        let kernelOffset = (setupSectors + 1) * 512
        guard kernelOffset < UInt64(image.count) else { throw bad("the setup sectors cover the whole file") }
        let kernel = try reader.slice(kernelOffset, count: UInt64(image.count) - kernelOffset)
        let initSize = UInt64(try reader.u32(0x260))
        let footprint = max(UInt64(kernel.count), initSize)
        let load = BootLayout.highMemoryStart
        guard memory.contains(load, count: footprint) else {
            throw bad("the kernel needs \(Units.formatSize(footprint)) at 1 MiB; guest memory is \(Units.formatSize(memory.size))")
        }
        try memory.write(kernel, at: load)
        return LoadedKernel(entry: load + 0x200, end: load + footprint, protocolVersion: version)
    }

    /// Builds the zero page from the image's own setup header, and returns its address.
    public static func writeZeroPage(image: [UInt8], into memory: GuestMemory, commandLine: String,
                                     initrd: (address: UInt64, size: UInt64)?, rsdp: UInt64 = 0) throws(HyperError) -> UInt64 {
        let page = zeroPageAddress
        try memory.zero(4096, at: page)
        // The setup header runs from 0x1F1 to 0x202 + the byte at 0x201 (its own length field).
        let headerEnd = min(0x202 + Int(image[0x201]), 0x280, image.count)
        try memory.write(Array(image[0x1F1..<headerEnd]), at: page + 0x1F1)
        try memory.write(UInt8(0xFF), at: page + 0x210)  // type_of_loader: undefined
        try writeCommandLine(commandLine, into: memory, limit: Int(try ByteReader(image).u32(0x238)))
        try memory.write(UInt32(BootLayout.commandLineAddress), at: page + 0x228)
        if let initrd {
            try memory.write(UInt32(truncatingIfNeeded: initrd.address), at: page + 0x218)
            try memory.write(UInt32(truncatingIfNeeded: initrd.size), at: page + 0x21C)
        }
        let regions: [(UInt64, UInt64, UInt32)] = [
            (0, BootLayout.lowMemoryEnd, 1),
            (BootLayout.lowMemoryEnd, 0x10_0000 - BootLayout.lowMemoryEnd, 2),
            (BootLayout.highMemoryStart, memory.size - BootLayout.highMemoryStart, 1),
        ]
        for (index, region) in regions.enumerated() {
            let entry = page + 0x2D0 + UInt64(index * 20)
            try memory.write(region.0, at: entry)
            try memory.write(region.1, at: entry + 8)
            try memory.write(region.2, at: entry + 16)
        }
        try memory.write(UInt8(regions.count), at: page + 0x1E8)
        try memory.write(rsdp, at: page + 0x070)  // acpi_rsdp_addr (protocol 2.14+)
        return page
    }

    /// Writes the NUL-terminated command line, refusing one longer than the kernel accepts.
    static func writeCommandLine(_ commandLine: String, into memory: GuestMemory, limit: Int) throws(HyperError) {
        let bytes = Array(commandLine.utf8)
        let capacity = min(limit > 0 ? limit : 255, BootLayout.commandLineCapacity - 1)
        guard bytes.count <= capacity, !bytes.contains(0) else {
            throw HyperError(.invalidArgument, "cmdline: longer than the kernel's \(capacity) bytes or contains NUL")
        }
        try memory.write(bytes + [0], at: BootLayout.commandLineAddress)
    }
}
