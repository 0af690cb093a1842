import Foundation
import Hyper
import Testing

@Suite("Guest kit and disk options")
struct GuestKitTests {
    @Test func aMissingKitSaysHowToBuildIt() throws {
        let folder = NSTemporaryDirectory() + "hyperctl-kit-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        #expect {
            _ = try GuestKit.locate(in: folder)
        } throws: { error in
            (error as? HyperError)?.message.contains("Scripts/guest-kit.sh") == true
        }
        // With both parts the kit is found, and the uncompressed kernel is preferred when it is there.
        for name in ["vmlinuz", "initramfs.cpio"] { FileManager.default.createFile(atPath: folder + "/" + name, contents: Data([1])) }
        #expect(try GuestKit.locate(in: folder).kernelPath == folder + "/vmlinuz")
        FileManager.default.createFile(atPath: folder + "/vmlinux", contents: Data([1]))
        #expect(try GuestKit.locate(in: folder) == GuestKit(kernelPath: folder + "/vmlinux", initrdPath: folder + "/initramfs.cpio"))
    }

    @Test func diskAttachmentsParse() throws {
        #expect(try DiskAttachment.parse("/etc/hostname:ro", base: "/") == DiskAttachment(path: "/etc/hostname", readOnly: true))
        #expect(try DiskAttachment.parse("hostname", base: "/etc") == DiskAttachment(path: "/etc/hostname", readOnly: false))
        #expect(try DiskAttachment.parse("/etc/hostname:rw", base: "/") == DiskAttachment(path: "/etc/hostname", readOnly: false))
        #expect(throws: HyperError.self) { try DiskAttachment.parse(":ro", base: "/") }
        #expect(throws: HyperError.self) { try DiskAttachment.parse("/no/such/disk.img", base: "/") }
    }
}
