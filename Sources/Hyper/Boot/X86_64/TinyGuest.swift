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
        // Code, assembled by hand (32-bit protected mode, flat segments):
        var code: [UInt8] = [0x66, 0xBA, 0xF8, 0x03]          // mov dx, 0x3f8
        let messageAddressPatch = code.count + 1
        code += [0xBE, 0, 0, 0, 0]                             // mov esi, message
        code += [0xAC,                                          // next: lodsb
                 0x84, 0xC0,                                    // test al, al
                 0x74, 0x03,                                    // jz done
                 0xEE,                                          // out dx, al
                 0xEB, 0xF8]                                    // jmp next
        code += [0xB0, 0xFE,                                    // done: mov al, 0xfe
                 0xE6, 0x64,                                    // out 0x64, al   (i8042: pulse reset)
                 0xF4,                                          // hlt
                 0xEB, 0xFD]                                    // jmp hlt
        let messageAddress = loadAddress + UInt32(code.count)
        for index in 0..<4 { code[messageAddressPatch + index] = UInt8(truncatingIfNeeded: messageAddress >> UInt32(index * 8)) }
        let payload = code + text
        if longMode { return elf64(payload: payload) }

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
