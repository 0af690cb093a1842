/// Puts a guest into memory: the kernel (bzImage or PVH ELF), the initrd, the ACPI tables and the boot
/// data, and says how vCPU 0 must start. Shared by raw boots and sandbox microVMs.
public enum GuestLoader {
    /// vCPU 0's starting state.
    public struct Entry {
        public var registers: X86Registers
        public var specialRegisters: X86SpecialRegisters
    }

    /// Loads `kernel` (and `initrd`) into `memory` and writes the tables for `vcpus` vCPUs and the
    /// virtio-mmio devices. `kernelName` names the image in errors.
    public static func load(kernel image: [UInt8], kernelName: String, initrd: [UInt8]?, commandLine: String,
                            into memory: GuestMemory, vcpus: Int, virtioDevices: [ACPITables.VirtioDevice]) throws(HyperError) -> Entry {
        let entry: PVHLoader.LoadedKernel.Entry
        let kernelEnd: UInt64
        let isBzImage = LinuxLoader.isBzImage(image)
        var initrdLimit = memory.size
        if isBzImage {
            let kernel = try LinuxLoader.load(image, into: memory)
            entry = .long(kernel.entry)
            kernelEnd = kernel.end
            // initrd_addr_max: the highest address the kernel can reach its initrd at.
            if image.count >= 0x230 {
                let maximum = (0..<4).reduce(UInt64(0)) { $0 | UInt64(image[0x22C + $1]) << UInt64($1 * 8) }
                if maximum > 0 { initrdLimit = min(initrdLimit, maximum + 1) }
            }
        } else if PVHLoader.isELF(image) {
            let kernel = try PVHLoader.load(image, into: memory)
            entry = kernel.entry
            kernelEnd = kernel.end
        } else {
            throw HyperError(.invalidArgument, "kernel: \(kernelName) is neither an ELF (PVH) image nor a bzImage")
        }
        var initrdPlace: (address: UInt64, size: UInt64)?
        if let initrd {
            let size = UInt64(initrd.count)
            guard size < initrdLimit, (initrdLimit - size) & ~0xFFF > (kernelEnd + 0xFFF) & ~0xFFF else {
                throw HyperError(.invalidArgument, "initrd: \(Units.formatSize(size)) does not fit above the kernel in \(Units.formatSize(memory.size)) of memory")
            }
            let address = (initrdLimit - size) & ~0xFFF
            try memory.write(initrd, at: address)
            initrdPlace = (address, size)
        }
        // A bzImage reads the zero page (rsi); a PVH kernel reads hvm_start_info (rbx). Both point at the RSDP.
        let rsdp = try ACPITables.write(into: memory, vcpus: vcpus, virtioDevices: virtioDevices)
        let bootData = isBzImage
            ? try LinuxLoader.writeZeroPage(image: image, into: memory, commandLine: commandLine, initrd: initrdPlace, rsdp: rsdp)
            : try PVHLoader.writeStartInfo(into: memory, commandLine: commandLine, initrd: initrdPlace, rsdp: rsdp)
        try BootLayout.writeDescriptorTables(into: memory)
        var registers = X86Registers()
        switch entry {
        case let .pvh(address):
            registers.rip = UInt64(address)
            registers.rbx = bootData
            return Entry(registers: registers, specialRegisters: BootLayout.protectedModeRegisters())
        case let .long(address):
            try BootLayout.writeIdentityPageTables(into: memory)
            registers.rip = address
            registers.rsi = bootData
            registers.rsp = BootLayout.stackTop
            registers.rbp = BootLayout.stackTop
            return Entry(registers: registers, specialRegisters: BootLayout.longModeRegisters())
        }
    }

    /// Reads a kernel or initrd file, refusing an empty one or one over 512 MiB.
    public static func readImage(_ path: String, what: String) throws(HyperError) -> [UInt8] {
        let bytes: [UInt8]
        do {
            bytes = try HostSystem.readFile(path, limit: 512 << 20)
        } catch {
            throw HyperError(.invalidArgument, "\(what): \(error)")
        }
        guard !bytes.isEmpty else { throw HyperError(.invalidArgument, "\(what): \(path) is empty") }
        return bytes
    }
}
