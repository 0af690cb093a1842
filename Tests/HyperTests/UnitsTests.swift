import Testing
@testable import Hyper

@Suite("Units")
struct UnitsTests {
    @Test(arguments: [
        ("64M", UInt64(64) << 20), ("2G", UInt64(2) << 30), ("512k", UInt64(512) << 10), ("4096", UInt64(4096)),
        ("1GiB", UInt64(1) << 30), ("8MB", UInt64(8) << 20), ("1T", UInt64(1) << 40),
    ])
    func parsesSizes(text: String, bytes: UInt64) {
        #expect(Units.parseSize(text) == bytes)
    }

    @Test(arguments: ["lots", "", "-1M", "0", "1.5G", "64X", "M", "99999999999999T"])
    func rejectsBadSizes(text: String) {
        #expect(Units.parseSize(text) == nil)
    }

    @Test(arguments: [
        ("500ms", Int64(500_000_000)), ("30s", Int64(30_000_000_000)), ("5m", Int64(300_000_000_000)),
        ("2h", Int64(7_200_000_000_000)), ("1.5s", Int64(1_500_000_000)), ("10", Int64(10_000_000_000)),
    ])
    func parsesDurations(text: String, nanoseconds: Int64) {
        #expect(Units.parseDuration(text)?.nanoseconds == nanoseconds)
    }

    @Test(arguments: ["-1s", "0s", "soon", "", "5x", "1e3s", "ms"])
    func rejectsBadDurations(text: String) {
        #expect(Units.parseDuration(text) == nil)
    }

    @Test func formatsInTheLargestExactUnit() {
        #expect(Units.formatSize(64 << 20) == "64M")
        #expect(Units.formatSize(1536 << 10) == "1536K")
        #expect(Units.formatSize(1000) == "1000")
        #expect(Units.formatDuration(.milliseconds(1500)) == "1500ms")
        #expect(Units.formatDuration(.seconds(300)) == "5m")
    }

    @Test func roundedSizesHaveOneDecimal() {
        #expect(Units.formatRoundedSize(512) == "512B")
        #expect(Units.formatRoundedSize(3572 << 10) == "3.5M")
        #expect(Units.formatRoundedSize(50_541_363) == "48.2M")
        #expect(Units.formatRoundedSize(1536) == "1.5K")
        #expect(Units.formatRoundedSize(1 << 30) == "1.0G")
    }
}
