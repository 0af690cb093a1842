/// The backends known to this build, looked up by name, with the `auto` selection rule.
public struct BackendRegistry: Sendable {
    /// The registered backends, in registration order.
    public private(set) var backends: [any Backend] = []

    /// The name that asks the registry to pick a backend.
    public static let automaticName = "auto"

    /// Creates a registry with the given backends.
    public init(_ backends: [any Backend] = []) {
        for backend in backends { register(backend) }
    }

    /// Adds a backend, replacing one registered earlier under the same name.
    public mutating func register(_ backend: any Backend) {
        backends.removeAll { $0.name == backend.name }
        backends.append(backend)
    }

    /// The backend registered under `name`, if any.
    public func backend(named name: String) -> (any Backend)? { backends.first { $0.name == name } }

    /// The registered names, in registration order.
    public var names: [String] { backends.map(\.name) }

    /// A backend chosen by name or by `auto`, with the reason for the choice.
    public struct Selection: Sendable {
        public var backend: any Backend
        public var reason: String
    }

    /// Returns the backend named `name`, or the automatic choice for `auto`.
    ///
    /// - Throws: `unknownBackend` listing the known names, or `backendUnavailable` when `auto` finds nothing.
    public func select(_ name: String) throws(HyperError) -> Selection {
        if name == Self.automaticName { return try selectAutomatically() }
        guard let backend = backends.first(where: { $0.name == name }) else {
            let known = (names + [Self.automaticName]).joined(separator: ", ")
            throw HyperError(.unknownBackend, "unknown backend \"\(name)\"; known backends: \(known)")
        }
        return Selection(backend: backend, reason: "asked for by name")
    }

    /// Picks the strongest isolation that works well here.
    ///
    /// Hardware-VM backends qualify only when accelerated; simulated backends never qualify.
    public func selectAutomatically() throws(HyperError) -> Selection {
        var passedOver: [String] = []
        let candidates = backends.filter { $0.isolation != .simulated }.sorted { $0.isolation > $1.isolation }
        for backend in candidates {
            let probe = backend.probe()
            if probe.isUsableAutomatically, !backend.launchesSandboxes {
                passedOver.append("\(backend.name): \(probe.reason), but its sandboxes are not implemented yet")
                continue
            }
            if probe.isUsableAutomatically {
                let why = passedOver.isEmpty ? "" : " (passed over " + passedOver.joined(separator: "; ") + ")"
                return Selection(backend: backend,
                                 reason: "auto picked \(backend.name): strongest working isolation (\(backend.isolation.name))\(why)")
            }
            passedOver.append("\(backend.name): " + (probe.isAvailable ? "" : "unavailable: ") + probe.reason)
        }
        throw HyperError(.backendUnavailable,
                         "auto found no working backend on this host: " + passedOver.joined(separator: "; "))
    }
}
