import Foundation
import Testing
@testable import Hyper

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

@Suite("Docker flavour, host side")
struct DockerFlavourTests {
    @Test func aMissingImageSaysHowToBuildIt() {
        let message = errorMessage { () throws(HyperError) in try DockerFlavour.disks(imagePath: "/no/such/root.img") }
        #expect(message?.contains("Scripts/docker-image.sh") == true, "message: \(message ?? "none")")
    }

    @Test func theScratchDiskIsSparseNamelessAndGoneWithItsDescriptor() throws {
        let folder = NSTemporaryDirectory() + "hyperctl-scratch-\(UUID().uuidString)"
        try HostSystem.makeDirectories(folder + "/nested")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let fd = try HostSystem.createAnonymousFile(in: folder + "/nested", size: 16 << 30)
        var info = stat()
        #expect(fstat(fd, &info) == 0)
        #expect(info.st_size == 16 << 30)
        #expect(info.st_blocks == 0)  // Sparse: nothing allocated until the guest writes.
        #expect(info.st_nlink == 0)   // No name: it goes when the VMM's descriptor closes, however it ends.
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder + "/nested").isEmpty)
        try HostSystem.writeAt(fd, [1, 2, 3], offset: 8 << 30)
        #expect(try HostSystem.readAt(fd, count: 3, offset: 8 << 30) == [1, 2, 3])
        close(fd)
    }

    @Test func theDisksAreTheSharedImageReadOnlyAndAFreshScratchDisk() throws {
        let folder = NSTemporaryDirectory() + "hyperctl-docker-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        #expect(FileManager.default.createFile(atPath: folder + "/root.img", contents: Data(count: 4096)))
        let disks = try DockerFlavour.disks(imagePath: folder + "/root.img", scratchDirectory: folder + "/scratch").devices
        #expect(disks.map(\.readOnly) == [true, false])
        #expect(disks.map(\.sectors) == [8, DockerFlavour.scratchBytes / 512])
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder + "/scratch").isEmpty)
        #expect(DockerFlavour.commandLineWords(proxyPort: nil) == " hyper.docker")
        #expect(DockerFlavour.commandLineWords(proxyPort: 3128) == " hyper.docker hyper.proxy=3128")
    }
}
