/// A tiny built-in guest: a 32-bit PVH ELF that prints a message on COM1 and resets the machine through the
/// i8042. It measures a VMM's own cost on any KVM host, hardware-accelerated or not, since it runs only a
/// few hundred guest instructions.
public enum TinyGuest {
    /// Where the guest's code loads.
    public static let loadAddress: UInt32 = 0x10_0000

    /// Returns the ELF image of a guest that prints `message` and resets. The same instructions run in 32-bit
    /// protected mode (a PVH ELF32, the default) and in 64-bit long mode (`longMode`: an ELF64 without the PVH
    /// note, entered with identity paging).
    public static func serialHelloImage(message: String = "hello from the guest\n", longMode: Bool = false) -> [UInt8] {
        let text = Array(message.utf8) + [0]
        // The code is assembled by hand; the same bytes run in 32-bit protected mode and in long mode.
        var code = helloCode()
        let messageAddress = loadAddress + UInt32(code.count)
        for index in 0..<4 { code[messageAddressOffset + index] = UInt8(truncatingIfNeeded: messageAddress >> UInt32(index * 8)) }
        let payload = code + text
        return longMode ? elf64(payload: payload) : pvhELF(payload: payload)
    }

    /// Returns a PVH guest that reads the 32-bit register at `base` (a virtio-mmio block's MagicValue),
    /// writes 0x0F to `base + 0x70` (its Status register), prints `Y` if the magic read back as "virt" and `N`
    /// otherwise, then resets. It exercises MMIO reads and writes from real guest code.
    public static func mmioProbeImage(base: UInt32) -> [UInt8] {
        let magic: UInt32 = 0x7472_6976  // "virt"
        var code: [UInt8] = [0xA1] + le32(base)                        // mov eax, [base]
        code += [0x3D] + le32(magic)                                    // cmp eax, magic
        code += [0x75, 0x0E]                                            // jne fail
        code += [0xC7, 0x05] + le32(base + 0x70) + le32(0x0F)          // mov dword [base + 0x70], 0x0f
        code += [0xB0, 0x59, 0xEB, 0x02]                                // mov al, 'Y'; jmp print
        code += [0xB0, 0x4E]                                            // fail: mov al, 'N'
        code += [0x66, 0xBA, 0xF8, 0x03, 0xEE, 0xB0, 0x0A, 0xEE]        // print: mov dx, 0x3f8; out dx, al; newline
        code += [0xB0, 0xFE, 0xE6, 0x64, 0xF4, 0xEB, 0xFD]              // reset through the i8042; hlt
        return pvhELF(payload: code)
    }

    /// Returns a PVH guest that counts from 1 to `limit` in a 32-bit counter in its own memory, printing
    /// `A` + (count mod 16) on COM1 for each count, then resets. Stopped and restored part-way, it must go on
    /// from the count it had: the snapshot tests' guest.
    public static func countingImage(limit: UInt32) -> [UInt8] {
        var code: [UInt8] = [0x66, 0xBA, 0xF8, 0x03]                  // mov dx, 0x3f8
        code += [0xBF] + le32(0)                                      // mov edi, counter (patched below)
        let counterOperand = code.count - 4
        code += [0x8B, 0x07]                                          // next: mov eax, [edi]
        code += [0x3D] + le32(limit)                                  // cmp eax, limit
        code += [0x73, 0x0A]                                          // jae done
        code += [0x40, 0x89, 0x07]                                    // inc eax; mov [edi], eax
        code += [0x24, 0x0F, 0x04, 0x41, 0xEE]                        // and al, 15; add al, 'A'; out dx, al
        code += [0xEB, 0xED]                                          // jmp next
        code += [0xB0, 0xFE, 0xE6, 0x64, 0xF4, 0xEB, 0xFD]            // done: reset through the i8042; hlt
        let counter = loadAddress + UInt32(code.count)
        code.replaceSubrange(counterOperand..<(counterOperand + 4), with: le32(counter))
        return pvhELF(payload: code + le32(0))
    }

    /// What `countingImage(limit:)` prints.
    public static func countingOutput(limit: UInt32) -> String {
        limit == 0 ? "" : String(decoding: (1...limit).map { UInt8(0x41 + ($0 & 0x0F)) }, as: UTF8.self)
    }

    /// An ELF32 with one PT_LOAD of `payload` at `loadAddress` and the Xen PVH entry note pointing at it.
    static func pvhELF(payload: [UInt8]) -> [UInt8] {
        // ELF32: header (52) + two program headers (PT_LOAD, PT_NOTE) (2 x 32) + the PVH note (20) + payload.
        let headerSize = 52, programHeaderSize = 32
        let noteOffset = headerSize + 2 * programHeaderSize
        let note = le32(4) + le32(4) + le32(18) + Array("Xen\0".utf8) + le32(loadAddress)  // XEN_ELFNOTE_PHYS32_ENTRY
        let payloadOffset = noteOffset + note.count
        var image: [UInt8] = [0x7F, 0x45, 0x4C, 0x46, 1, 1, 1, 0] + [UInt8](repeating: 0, count: 8)
        image += le16(2) + le16(3) + le32(1)                   // ET_EXEC, EM_386, EV_CURRENT
        image += le32(loadAddress)                              // e_entry
        image += le32(UInt32(headerSize)) + le32(0) + le32(0)  // e_phoff, e_shoff, e_flags
        image += le16(UInt16(headerSize)) + le16(UInt16(programHeaderSize)) + le16(2)
        image += le16(40) + le16(0) + le16(0)                   // e_shentsize, e_shnum, e_shstrndx
        // PT_LOAD: the payload at 1 MiB, read+execute.
        image += le32(1) + le32(UInt32(payloadOffset)) + le32(loadAddress) + le32(loadAddress)
        image += le32(UInt32(payload.count)) + le32(UInt32(payload.count)) + le32(5) + le32(0x1000)
        // PT_NOTE.
        image += le32(4) + le32(UInt32(noteOffset)) + le32(0) + le32(0) + le32(UInt32(note.count)) + le32(UInt32(note.count)) + le32(4) + le32(4)
        return image + note + payload
    }

    /// Returns a bzImage (boot protocol 2.15, 64-bit entry) whose protected-mode part prints `message` and
    /// resets. It exercises the Linux loader and the 64-bit boot-protocol entry the way a real kernel would.
    public static func serialHelloBzImage(message: String = "hello from the guest\n") -> [UInt8] {
        let text = Array(message.utf8) + [0]
        var code = helloCode()
        let messageAddress = loadAddress + 0x200 + UInt32(code.count)
        for index in 0..<4 { code[messageAddressOffset + index] = UInt8(truncatingIfNeeded: messageAddress >> UInt32(index * 8)) }
        let protectedMode = [UInt8](repeating: 0xF4, count: 0x200) + code + text  // 64-bit entry at +0x200
        var setup = [UInt8](repeating: 0, count: 1024)                            // boot sector + 1 setup sector
        setup[0x1F1] = 1                                                            // setup_sects
        setup[0x1FE] = 0x55; setup[0x1FF] = 0xAA                                    // boot_flag
        setup[0x200] = 0xEB; setup[0x201] = 0x62                                    // jump over the header (its length)
        setup.replaceSubrange(0x202..<0x206, with: Array("HdrS".utf8))
        setup.replaceSubrange(0x206..<0x208, with: le16(0x020F))                    // protocol 2.15
        setup[0x211] = 0x01                                                         // LOADED_HIGH
        setup.replaceSubrange(0x214..<0x218, with: le32(loadAddress))              // code32_start
        setup.replaceSubrange(0x236..<0x238, with: le16(0x0001))                    // XLF_KERNEL_64
        setup.replaceSubrange(0x238..<0x23C, with: le32(2047))                      // cmdline_size
        setup.replaceSubrange(0x260..<0x264, with: le32(UInt32(protectedMode.count)))  // init_size
        return setup + protectedMode
    }

    /// The print-and-reset code; its `mov esi, imm32` operand is at `messageAddressOffset`.
    static func helloCode() -> [UInt8] {
        [0x66, 0xBA, 0xF8, 0x03,             // mov dx, 0x3f8
         0xBE, 0, 0, 0, 0,                   // mov esi, message
         0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8,  // next: lodsb; test al,al; jz done; out dx,al; jmp next
         0xB0, 0xFE, 0xE6, 0x64,             // done: mov al, 0xfe; out 0x64, al
         0xF4, 0xEB, 0xFD]                   // hlt; jmp hlt
    }

    static let messageAddressOffset = 5

    /// An ELF64 with one PT_LOAD at `loadAddress` and no notes.
    static func elf64(payload: [UInt8]) -> [UInt8] {
        let headerSize = 64, programHeaderSize = 56
        let payloadOffset = UInt64(headerSize + programHeaderSize)
        var image: [UInt8] = [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0] + [UInt8](repeating: 0, count: 8)
        image += le16(2) + le16(62) + le32(1)                     // ET_EXEC, EM_X86_64, EV_CURRENT
        image += le64(UInt64(loadAddress)) + le64(UInt64(headerSize)) + le64(0) + le32(0)  // entry, phoff, shoff, flags
        image += le16(UInt16(headerSize)) + le16(UInt16(programHeaderSize)) + le16(1) + le16(64) + le16(0) + le16(0)
        image += le32(1) + le32(5) + le64(payloadOffset) + le64(UInt64(loadAddress)) + le64(UInt64(loadAddress))
        image += le64(UInt64(payload.count)) + le64(UInt64(payload.count)) + le64(0x1000)
        return image + payload
    }

    static func le64(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> UInt64($0 * 8)) } }
    static func le16(_ value: UInt16) -> [UInt8] { [UInt8(value & 0xFF), UInt8(value >> 8)] }
    static func le32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> UInt32($0 * 8)) } }
}
