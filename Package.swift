// swift-tools-version: 6.2
// hyperctl: a sandbox hypervisor for AI coding agents.
import PackageDescription

/// Code that touches raw memory opts into strict memory safety, so every unsafe expression is marked.
let strictSafety: [SwiftSetting] = [.strictMemorySafety()]

let package = Package(
    name: "hyperctl",
    products: [
        .executable(name: "hyperctl", targets: ["hyperctl"]),
        .library(name: "Hyper", targets: ["Hyper"]),
    ],
    targets: [
        // Floor 1-3: the accelerator-neutral core. Knows no concrete backend.
        .target(name: "Hyper", swiftSettings: strictSafety),

        // The KVM accelerator and the `kvm` backend, over /dev/kvm ioctls.
        .target(name: "CHyperKVM"),
        .target(name: "HyperKVM", dependencies: ["Hyper", "CHyperKVM"], swiftSettings: strictSafety),

        // The namespace sandbox for hosts without usable KVM, and its single-threaded pre-exec helper (C),
        // which runs from a constructor when the binary re-executes itself as `hyper-jail`.
        .target(name: "CHyperJail"),
        .target(name: "HyperProcess", dependencies: ["Hyper", "CHyperJail"], swiftSettings: strictSafety),

        // The deterministic simulation backend (never picked by `auto`).
        .target(name: "HyperFake", dependencies: ["Hyper"]),

        // The CLI: the only place that knows every backend.
        .executableTarget(
            name: "hyperctl",
            dependencies: ["Hyper", "HyperKVM", "HyperProcess", "HyperFake"],
            linkerSettings: [.unsafeFlags(["-static-executable", "-use-ld=lld"], .when(configuration: .release))]
        ),

        .testTarget(name: "HyperTests", dependencies: ["Hyper"]),
        .testTarget(name: "HyperKVMTests", dependencies: ["HyperKVM", "CHyperKVM"]),
        .testTarget(name: "HyperProcessTests", dependencies: ["HyperProcess"]),
        .testTarget(name: "HyperFakeTests", dependencies: ["HyperFake"]),
        .testTarget(name: "hyperctlTests", dependencies: ["hyperctl"]),
    ]
)
