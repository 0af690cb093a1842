/// A snapshot of a microVM sandbox: the machine (`MachineSnapshot`'s `memory` and `state` files) and the
/// file `sandbox.json`, which says what the sandbox around the machine was: its size, its devices in order,
/// and for the Docker flavour the image it shares and the copy of its scratch disk (`scratch`, sparse).
///
/// Everything a clone would share with its origin's host side (the egress proxy, secrets, user disks) is
/// refused when the snapshot is taken; see docs/snapshots.md.
public struct SandboxSnapshot: Equatable, Sendable {
    /// The version of `sandbox.json`'s layout.
    public static let formatVersion = 1
    static let descriptionFile = "sandbox.json"
    static let scratchFile = "scratch"

    public var memoryBytes: UInt64
    public var vcpus: Int
    /// The Docker flavour's shared image (its path and size), when the sandbox is one.
    public var dockerImage: String?
    public var dockerImageBytes: UInt64
    /// The folder the snapshot is in.
    public var folder: String

    /// Creates a description.
    public init(memoryBytes: UInt64, vcpus: Int, dockerImage: String?, dockerImageBytes: UInt64, folder: String) {
        self.memoryBytes = memoryBytes
        self.vcpus = vcpus
        self.dockerImage = dockerImage
        self.dockerImageBytes = dockerImageBytes
        self.folder = folder
    }

    public var isDocker: Bool { dockerImage != nil }

    var document: JSONValue {
        var members: [(String, JSONValue)] = [("format", .integer(Self.formatVersion)), ("memoryBytes", .string(String(memoryBytes))),
                                              ("vcpus", .integer(vcpus))]
        if let dockerImage {
            members += [("dockerImage", .string(dockerImage)), ("dockerImageBytes", .string(String(dockerImageBytes)))]
        }
        return .object(members)
    }

    /// Writes `sandbox.json` into the folder (which holds the machine's files already).
    func writeDescription() throws(HyperError) {
        do { try HostSystem.writeFile(folder + "/" + Self.descriptionFile, Array((document.formatted() + "\n").utf8)) } catch {
            throw HyperError(.hostFailure, "snapshot: \(error)")
        }
    }

    /// Reads a snapshot folder's description; refuses what this hyperctl did not write. The machine's own
    /// files are checked when they are read (`MachineSnapshot.read`).
    public static func read(from folder: String) throws(HyperError) -> SandboxSnapshot {
        guard HostSystem.fileKind(at: folder) == .directory else {
            throw HyperError(.invalidArgument, "--from-snapshot: \(folder) is not a snapshot folder")
        }
        let path = folder + "/" + descriptionFile
        guard let text = HostSystem.readText(path), let document = try? JSONValue.parse(text) else {
            throw HyperError(.invalidArgument, "--from-snapshot: \(folder) has no readable \(descriptionFile); it is not a sandbox snapshot")
        }
        func number(_ key: String) -> UInt64? {
            switch document[key] {
            case let .string(text)?: return UInt64(text)
            case let .number(value)?: return value >= 0 && value < 1e18 ? UInt64(value) : nil
            default: return nil
            }
        }
        guard number("format") == UInt64(formatVersion) else {
            throw HyperError(.invalidArgument, "--from-snapshot: \(path) has another format (this hyperctl reads format \(formatVersion))")
        }
        guard let memory = number("memoryBytes"), memory >= 64 << 20, memory <= MicroVM.maximumMemory,
              let vcpus = number("vcpus"), (1...UInt64(MicroVM.maximumVCPUs)).contains(vcpus) else {
            throw HyperError(.invalidArgument, "--from-snapshot: \(path) has no valid machine size")
        }
        var image: String?
        var imageBytes: UInt64 = 0
        if case let .string(path)? = document["dockerImage"] {
            guard let bytes = number("dockerImageBytes") else { throw HyperError(.invalidArgument, "--from-snapshot: \(path) has no image size") }
            image = path
            imageBytes = bytes
        }
        return SandboxSnapshot(memoryBytes: memory, vcpus: Int(vcpus), dockerImage: image, dockerImageBytes: imageBytes, folder: folder)
    }
}
