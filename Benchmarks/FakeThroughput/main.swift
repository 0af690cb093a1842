// fake-throughput: simulated sandbox lifecycles per second, in one process (no spawning), for the fake
// backend that contributors and tests use. Each lifecycle validates a spec, launches it, runs the
// simulated `true` to its end on the virtual clock and builds the report.
//
//     swift run -c release fake-throughput [SECONDS]
import Hyper
import HyperFake

let seconds = CommandLine.arguments.dropFirst().first.flatMap(Double.init) ?? 3
let backend = FakeBackend()
var spec = SandboxSpec()
spec.command = ["true"]
spec.workspace = "/tmp"
var options = LaunchOptions()
options.streams = StandardStreams(input: -1, output: -1, error: -1)

var lifecycles = 0
var failures = 0
let start = HostSystem.monotonicNanoseconds()
let end = start + UInt64(seconds * 1e9)
while HostSystem.monotonicNanoseconds() < end {
    for seed in 0..<100 {
        options.seed = UInt64(lifecycles + seed)
        do {
            let handle = try backend.launch(try spec.validated(), options: options)
            let status = try handle.wait()
            _ = SandboxReport(backend: backend.name, spec: spec, timeline: handle.timeline, status: status).text
            if status != .exited(0) { failures += 1 }
        } catch {
            failures += 1
        }
    }
    lifecycles += 100
}
let elapsed = Double(HostSystem.monotonicNanoseconds() - start) / 1e9
let rate = Double(lifecycles) / elapsed
let tenths = Int((elapsed * 10).rounded())
print("fake backend: \(lifecycles) simulated lifecycles in \(tenths / 10).\(tenths % 10) s: \(Int(rate.rounded())) per second, \(failures) failed")
