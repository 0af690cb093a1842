#if os(Linux)
import CHyperKVM
#endif
import Hyper

/// The facts about this host's KVM that decide whether the kvm backend can run, and how fast.
///
/// `gather` reads them from the host; tests build them by hand to check every verdict.
public struct KVMHostFacts: Equatable, Sendable {
    /// The device node that was probed.
    public var devicePath = "/dev/kvm"
    /// Whether the node exists.
    public var deviceExists = false
    /// The errno of opening it, or nil when it opened.
    public var openErrorNumber: Int32?
    /// `KVM_GET_API_VERSION`, when the device opened.
    public var apiVersion: Int32?
    /// The extensions the VMM relies on that KVM reports present.
    public var extensions: Set<KVMExtension> = []
    /// The hardware virtualization flag in /proc/cpuinfo (`vmx` or `svm`), if any.
    public var hardwareVirtualizationFlag: String?
    /// A loaded module that serves /dev/kvm in software (`kvm_pvm`), if any.
    public var softwareProvider: String?

    /// Creates empty facts (no device).
    public init() {}

    /// Reads the facts from this host.
    public static func gather(devicePath: String = "/dev/kvm") -> KVMHostFacts {
        var facts = KVMHostFacts()
        facts.devicePath = devicePath
        facts.deviceExists = HostSystem.fileKind(at: devicePath) != nil
        if let cpuinfo = HostSystem.readText("/proc/cpuinfo") {
            facts.hardwareVirtualizationFlag = hardwareFlag(inCPUInfo: cpuinfo)
        }
        facts.softwareProvider = ["kvm_pvm"].first { HostSystem.fileKind(at: "/sys/module/\($0)") == .directory }
        #if os(Linux)
        guard facts.deviceExists else { return facts }
        do {
            let device = try KVMDevice(path: devicePath)
            facts.apiVersion = try? device.apiVersion()
            for candidate in KVMExtension.allCases where device.checkExtension(candidate.capability) > 0 {
                facts.extensions.insert(candidate)
            }
        } catch {
            if case let .systemCall(_, number) = error { facts.openErrorNumber = number }
        }
        #endif
        return facts
    }

    /// Returns `vmx` or `svm` when the first `flags` line of /proc/cpuinfo has it.
    public static func hardwareFlag(inCPUInfo text: String) -> String? {
        for line in text.split(separator: "\n") where line.hasPrefix("flags") {
            let flags = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == ":" })
            return flags.first { $0 == "vmx" || $0 == "svm" }.map(String.init)
        }
        return nil
    }
}

/// KVM extensions the VMM uses.
public enum KVMExtension: String, CaseIterable, Sendable, Comparable {
    case userMemory = "user-memory"
    case irqchip
    case ioeventfd
    case irqfd

    /// The `KVM_CAP_*` number.
    public var capability: Int32 {
        switch self {
        case .userMemory: return 3
        case .irqchip: return 0
        case .ioeventfd: return 36
        case .irqfd: return 32
        }
    }

    public static func < (lhs: KVMExtension, rhs: KVMExtension) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// Judges `KVMHostFacts`: available or not, accelerated or not, and the reasons in words.
public enum KVMProbe {
    /// The KVM API version the VMM is written against.
    public static let requiredAPIVersion: Int32 = 12

    /// Returns the verdict for these facts.
    public static func evaluate(_ facts: KVMHostFacts) -> ProbeResult {
        guard facts.deviceExists else {
            return ProbeResult(isAvailable: false, isAccelerated: false,
                               reasons: ["\(facts.devicePath) does not exist (load kvm_intel or kvm_amd, or enable virtualization in firmware)"])
        }
        if let number = facts.openErrorNumber {
            return ProbeResult(isAvailable: false, isAccelerated: false,
                               reasons: ["\(facts.devicePath) cannot be opened: \(HostSystem.errorText(number)) (is the user in the kvm group?)"])
        }
        guard let version = facts.apiVersion, version == requiredAPIVersion else {
            let shown = facts.apiVersion.map(String.init) ?? "unknown"
            return ProbeResult(isAvailable: false, isAccelerated: false,
                               reasons: ["KVM API version \(shown); hyperctl needs \(requiredAPIVersion)"])
        }
        guard facts.extensions.contains(.userMemory) else {
            return ProbeResult(isAvailable: false, isAccelerated: false, reasons: ["KVM lacks KVM_CAP_USER_MEMORY"])
        }
        let api = "API \(version); extensions: \(facts.extensions.sorted().map(\.rawValue).joined(separator: ", "))"
        var reasons: [String] = []
        let accelerated: Bool
        switch (facts.hardwareVirtualizationFlag, facts.softwareProvider) {
        case let (flag?, nil):
            accelerated = true
            reasons.append("hardware-accelerated (\(flag))")
        case let (_, provider?):
            accelerated = false
            reasons.append("present, not hardware-accelerated: \(facts.devicePath) is served by \(provider) (software nested virtualization)")
            if facts.hardwareVirtualizationFlag == nil { reasons.append("/proc/cpuinfo has no vmx or svm flag") }
        case (nil, nil):
            accelerated = false
            reasons.append("present, not hardware-accelerated: /proc/cpuinfo has no vmx or svm flag")
        }
        reasons.append(api)
        return ProbeResult(isAvailable: true, isAccelerated: accelerated, reasons: reasons)
    }
}
