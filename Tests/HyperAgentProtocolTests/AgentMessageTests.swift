import HyperAgentProtocol
import Testing

@Suite("Agent protocol frames")
struct AgentMessageTests {
    static let samples: [AgentMessage] = [
        .exec(AgentExec(id: 3, arguments: ["sh", "-c", "echo ünïcode"], environment: ["PATH=/bin", "A="], workingDirectory: "/work",
                        interactive: true, tty: true, rows: 50, columns: 132, pidsLimit: 64)),
        .stdin(3, Array("input".utf8)), .stdin(3, []), .signal(3, 15), .resize(3, rows: 40, columns: 100), .shutdown, .returnWorkspace,
        .filesBegin(root: "/work/space"),
        .file(FileHeader(path: "dir/file.txt", kind: .regular, mode: 0o755, modificationNanoseconds: 1_700_000_000_123_456_789, size: 3)),
        .file(FileHeader(path: "link", kind: .symbolicLink, mode: 0o777, modificationNanoseconds: -5, linkTarget: "../elsewhere")),
        .fileData([0, 1, 2]), .removed("gone/file"), .filesEnd,
        .ready(AgentReady(kernelRelease: "6.1.0", agentStartNanoseconds: 1, readyNanoseconds: 2)),
        .started(3, pid: 42), .stdout(3, Array(repeating: 0xFF, count: 70_000)), .stderr(UInt32.max, [10]),
        .exited(3, .exited(127)), .exited(4, .signaled(9)), .failure("it broke"),
        .setup(AgentSandboxSetup(proxyPort: 3128, secretFiles: [("TOKEN", "placeholder"), ("KEY", "")])), .setup(AgentSandboxSetup()),
        .connectionOpen(7), .connectionData(7, Array("GET".utf8)), .connectionAcknowledge(7, 3), .connectionClose(UInt32.max),
        .daemonReady(AgentDaemonReady(name: "dockerd", startNanoseconds: 1_200_000_000, readyNanoseconds: UInt64.max)),
        .identity(AgentIdentity(hostname: "vm1", seed: Array(0..<32), realtimeNanoseconds: 1_764_900_000_123_456_789)),
        .identity(AgentIdentity(hostname: "s", seed: [], realtimeNanoseconds: -1)),
    ]

    @Test func everyMessageRoundTripsEvenByteByByte() throws {
        let stream = Self.samples.flatMap(\.frame)
        var whole = FrameDecoder()
        whole.append(stream)
        var decoded: [AgentMessage] = []
        while let message = try whole.next() { decoded.append(message) }
        #expect(decoded == Self.samples)

        var trickle = FrameDecoder()
        decoded = []
        for byte in stream {
            trickle.append([byte])
            while let message = try trickle.next() { decoded.append(message) }
        }
        #expect(decoded == Self.samples)
        #expect(trickle.pendingCount == 0)
    }

    @Test(arguments: [
        ([0x00, 0x00, 0x20, 0x00] as [UInt8], "over"),                  // 2 MiB frame
        ([0x00, 0x00, 0x00, 0x00], "over"),                             // empty frame
        ([0x01, 0x00, 0x00, 0x00, 0x7F], "unknown message type 0x7f"),
        ([0x0A, 0x00, 0x00, 0x00, 0x03, 1, 0, 0, 0, 1, 0, 0, 0, 9], "trailing"),    // signal with an extra byte
        ([0x05, 0x00, 0x00, 0x00, 0x85, 9, 0, 0, 0], "9-byte field"),   // failure text longer than the frame
        ([0x09, 0x00, 0x00, 0x00, 0x85, 4, 0, 0, 0, 0xFF, 0xFE, 0x41, 0x41], "not UTF-8"),
        ([0x0D, 0x00, 0x00, 0x00, 0x01, 1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x0F, 0, 0, 0, 0], "strings with"),  // a lying list count
        ([0x06, 0x00, 0x00, 0x00, 0x85, 1, 0, 0, 0, 0], "NUL"),
        ([0x0A, 0x00, 0x00, 0x00, 0x86, 1, 0, 0, 0, 0x64, 1, 0, 0, 0], "truncated integer"),  // daemon-ready cut short
        ([0x11, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], "the hostname \"\""),  // identity without a hostname
        ([0x17, 0x00, 0x00, 0x00, 0x06, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0x61, 0x2F, 0x62, 1, 0, 0, 0, 1, 0, 0, 0, 0x78], "secret file name"),
    ])
    func malformedFramesAreErrorsNotCrashes(bytes: [UInt8], expected: String) {
        var decoder = FrameDecoder()
        decoder.append(bytes)
        #expect {
            _ = try decoder.next()
        } throws: { error in
            "\(error)".contains(expected)
        }
    }

    @Test func anIdentityWithTooMuchSeedOrABadHostnameIsRefused() {
        for identity in [AgentIdentity(hostname: "a", seed: Array(repeating: 7, count: AgentIdentity.maximumSeed + 1), realtimeNanoseconds: 0),
                         AgentIdentity(hostname: String(repeating: "h", count: AgentIdentity.maximumHostnameLength + 1), seed: [], realtimeNanoseconds: 0),
                         AgentIdentity(hostname: "a/b", seed: [], realtimeNanoseconds: 0)] {
            var decoder = FrameDecoder()
            decoder.append(AgentMessage.identity(identity).frame)
            #expect(throws: AgentProtocolError.self) { _ = try decoder.next() }
        }
    }

    @Test func randomBytesNeverCrashTheDecoder() {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func nextByte() -> UInt8 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
        var errors = 0
        for _ in 0..<2000 {
            var decoder = FrameDecoder()
            // A plausible length and type, then noise: reaches the payload readers, not just the length check.
            let length = Int(nextByte() % 40) + 1
            decoder.append([UInt8(length), 0, 0, 0] + [[0x01, 0x40, 0x80, 0x84, 0x85, 0x44].randomElement()!] + (0..<length).map { _ in nextByte() })
            do {
                while try decoder.next() != nil {}
            } catch {
                errors += 1
            }
        }
        #expect(errors > 1000)
    }
}

@Suite("Proxied connections' flow control")
struct ConnectionFlowTests {
    @Test func theWindowBoundsWhatEachSideHoldsAndSends() throws {
        var flow = ConnectionFlow()
        try flow.receive([UInt8](repeating: 1, count: AgentProtocol.connectionWindow), connection: 7)
        #expect(throws: AgentProtocolError.self) { try flow.receive([1], connection: 7) }
        #expect(flow.wrote(1000, connection: 7) == .connectionAcknowledge(7, 1000))
        #expect(flow.wrote(0, connection: 7) == nil)
        try flow.receive([UInt8](repeating: 2, count: 1000), connection: 7)
        flow.sent(AgentProtocol.connectionWindow)
        #expect(!flow.mayRead)
        flow.acknowledged(1)
        #expect(flow.mayRead)
        flow.acknowledged(UInt32.max)  // More than was sent is clamped, not wrapped.
        #expect(flow.unacknowledged == 0)
    }

    @Test func aConnectionEndsWhenBothSidesClosedAndAllWasWritten() throws {
        var flow = ConnectionFlow()
        try flow.receive([1, 2, 3], connection: 1)
        flow.peerDidClose()
        #expect(throws: AgentProtocolError.self) { try flow.receive([4], connection: 1) }
        flow.localClosed = true
        #expect(!flow.isFinished && !flow.mayRead)
        _ = flow.wrote(3, connection: 1)
        #expect(flow.isFinished)
    }
}
