import HyperAgentProtocol

/// Produces the frames of a workspace transfer a little at a time, so a large tree never sits in memory
/// whole: `filesBegin`, each object's header and data, then `filesEnd`.
struct WorkspaceSender {
    let root: String
    private var headers: [FileHeader]
    private var nextHeader = 0
    private var reader: FileChunkReader?
    private var begun = false
    private(set) var isFinished = false

    /// Lists the tree under `root` (not following links).
    init(root: String) throws(HyperError) {
        self.root = root
        do { headers = try FileTree.list(root: root) } catch { throw HyperError(.hostFailure, "\(error)") }
    }

    /// The next frames, about `budget` bytes of them; empty once finished.
    mutating func nextFrames(budget: Int) throws(HyperError) -> [UInt8] {
        var frames: [UInt8] = []
        do {
            if !begun {
                begun = true
                frames += AgentMessage.filesBegin(root: root).frame
            }
            while frames.count < budget, !isFinished {
                if let current = reader {
                    if let chunk = try current.next() { frames += AgentMessage.fileData(chunk).frame } else { reader = nil }
                    continue
                }
                guard nextHeader < headers.count else {
                    frames += AgentMessage.filesEnd.frame
                    isFinished = true
                    break
                }
                let header = headers[nextHeader]
                nextHeader += 1
                frames += AgentMessage.file(header).frame
                if header.kind == .regular && header.size > 0 {
                    reader = try FileChunkReader(path: root + "/" + header.path, size: header.size)
                }
            }
        } catch {
            throw HyperError(.hostFailure, "\(error)")
        }
        return frames
    }
}
