// swift-tools-version: 6.2
// hyperctl: a sandbox hypervisor for AI coding agents.
import PackageDescription

/// Code that touches raw memory opts into strict memory safety, so every unsafe expression is marked.
let strictSafety: [SwiftSetting] = [.strictMemorySafety()]

let package = Package(
    name: "hyperctl",
    products: [
        .executable(name: "hyperctl", targets: ["hyperctl"]),
        .executable(name: "hyper-agent", targets: ["hyper-agent"]),
        .library(name: "Hyper", targets: ["Hyper"]),
    ],
    targets: [
        // The host-guest agent protocol and the workspace transfer, shared by the core and the guest agent.
        .target(name: "HyperAgentProtocol", swiftSettings: strictSafety),

        // Floor 1-3: the accelerator-neutral core. Knows no concrete backend.
        // Host calls Swift cannot express: descriptor passing, peer credentials, the signal relay.
        .target(name: "CHyperHost"),
        .target(name: "Hyper", dependencies: ["HyperAgentProtocol", "CHyperHost"], swiftSettings: strictSafety),

        // The KVM accelerator and the `kvm` backend, over /dev/kvm ioctls.
        .target(name: "CHyperKVM"),
        .target(name: "HyperKVM", dependencies: ["Hyper", "CHyperKVM"], swiftSettings: strictSafety),

        // The namespace sandbox for hosts without usable KVM, and its single-threaded pre-exec helper (C),
        // which runs from a constructor when the binary re-executes itself as `hyper-jail`.
        // How both sandboxes execute the command's program (PATH search in its own environment).
        .target(name: "CHyperExec"),
        .target(name: "CHyperJail", dependencies: ["CHyperExec"]),
        .target(name: "HyperProcess", dependencies: ["Hyper", "CHyperJail"], swiftSettings: strictSafety),

        // The deterministic simulation backend (never picked by `auto`).
        .target(name: "HyperFake", dependencies: ["Hyper"]),

        // The CLI: the only place that knows every backend.
        .executableTarget(
            name: "hyperctl",
            dependencies: ["Hyper", "HyperKVM", "HyperProcess", "HyperFake"],
            linkerSettings: [.unsafeFlags(["-static-executable", "-use-ld=lld"], .when(configuration: .release))]
        ),

        // The guest agent: PID 1 in each sandbox VM, a static binary that links only the protocol.
        .target(name: "CHyperAgent", dependencies: ["CHyperExec"]),
        .executableTarget(
            name: "hyper-agent",
            dependencies: ["HyperAgentProtocol", "CHyperAgent"],
            swiftSettings: strictSafety,
            linkerSettings: [.unsafeFlags(["-static-executable", "-use-ld=lld"], .when(configuration: .release))]
        ),

        // Benchmarks that run in-process (the others are scripts in Benchmarks/).
        .executableTarget(name: "fake-throughput", dependencies: ["Hyper", "HyperFake"], path: "Benchmarks/FakeThroughput"),

        .testTarget(name: "HyperAgentProtocolTests", dependencies: ["HyperAgentProtocol"]),
        .testTarget(name: "HyperTests", dependencies: ["Hyper"]),
        .testTarget(name: "HyperKVMTests", dependencies: ["HyperKVM", "CHyperKVM"]),
        .testTarget(name: "HyperProcessTests", dependencies: ["HyperProcess"]),
        .testTarget(name: "HyperFakeTests", dependencies: ["HyperFake"]),
        .testTarget(name: "hyperctlTests", dependencies: ["hyperctl"]),
    ]
)
