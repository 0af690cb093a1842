/// The network allowlist as the egress proxy applies it: which destinations a sandbox may reach.
///
/// - Link-local addresses (the cloud metadata address 169.254.169.254 among them), multicast and the
///   unspecified address are refused whatever the allowlist says.
/// - Loopback, private and shared ranges, and any IP literal, are reachable only when the allowlist names that
///   exact address with its port.
/// - A name must be on the allowlist (exactly, or under a `*.domain` wildcard, with the entry's port if it
///   has one). It is resolved on the host, and refused when any address it resolves to is refused by the rules
///   above (DNS rebinding); the proxy connects to the address checked here, never resolving again.
public struct EgressPolicy: Sendable {
    public let destinations: [NetworkDestination]

    /// What the policy says about one destination.
    public enum Decision: Equatable, Sendable {
        case allow(IPAddress)
        case deny(String)
    }

    /// Creates the policy for an allowlist.
    public init(destinations: [NetworkDestination]) {
        self.destinations = destinations
    }

    /// How an address is treated.
    enum AddressClass: Equatable {
        /// Refused always (link-local, metadata, multicast, unspecified).
        case blocked(String)
        /// Only as an exact allowlist entry with its port (loopback, private, shared).
        case special(String)
        case publicAddress
    }

    static func classify(_ address: IPAddress) -> AddressClass {
        let ip = address.unmapped
        let b = ip.bytes
        if ip.isIPv4 {
            switch (b[0], b[1]) {
            case (169, 254): return .blocked(b == [169, 254, 169, 254] ? "the cloud metadata address" : "a link-local address")
            case (0, _): return .blocked("an unspecified address")
            case (224...255, _): return .blocked("a multicast or reserved address")
            case (127, _): return .special("a loopback address")
            case (10, _), (192, 168): return .special("a private address")
            case (172, 16...31): return .special("a private address")
            case (100, 64...127): return .special("a shared (carrier-grade NAT) address")
            default: return .publicAddress
            }
        }
        if b.allSatisfy({ $0 == 0 }) { return .blocked("an unspecified address") }
        if b[0] == 0xFE && b[1] & 0xC0 == 0x80 { return .blocked("a link-local address") }
        if b[0] == 0xFF { return .blocked("a multicast address") }
        if b[0..<15].allSatisfy({ $0 == 0 }) && b[15] == 1 { return .special("a loopback address") }
        if b[0] & 0xFE == 0xFC { return .special("a private (unique local) address") }
        return .publicAddress
    }

    /// Whether the allowlist names this exact address and port.
    func namesExactly(_ address: IPAddress, port: UInt16) -> Bool {
        destinations.contains { entry in
            guard entry.port == port, let listed = IPAddress(entry.host) else { return false }
            return listed.unmapped == address.unmapped
        }
    }

    /// Whether a host name is on the allowlist for `port`.
    func lists(name: String, port: UInt16) -> Bool {
        destinations.contains { entry in
            guard entry.port == nil || entry.port == port, IPAddress(entry.host) == nil else { return false }
            if entry.host.hasPrefix("*.") { return name.hasSuffix(String(entry.host.dropFirst(1))) && name.count > entry.host.count - 1 }
            return entry.host == name
        }
    }

    /// Decides about `host` (a name or an IP literal) at `port`, resolving names with `resolve`.
    public func decide(host rawHost: String, port: UInt16, resolve: (String) -> [IPAddress] = HostSockets.resolve) -> Decision {
        var host = rawHost.lowercased()
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.hasSuffix(".") { host = String(host.dropLast()) }
        guard port > 0 else { return .deny("port 0") }
        if let address = IPAddress(host) {
            switch Self.classify(address) {
            case let .blocked(what): return .deny("\(address) is \(what), which is never reachable")
            case .special, .publicAddress:
                guard namesExactly(address, port: port) else {
                    return .deny("a raw IP address is reachable only when the allowlist names it with its port (\(address.isIPv4 ? "\(address)" : "[\(address)]"):\(port))")
                }
                return .allow(address)
            }
        }
        guard lists(name: host, port: port) else { return .deny("\(host):\(port) is not on the allowlist") }
        let addresses = resolve(host)
        guard !addresses.isEmpty else { return .deny("\(host) does not resolve") }
        for address in addresses {
            switch Self.classify(address) {
            case let .blocked(what): return .deny("\(host) resolves to \(address), \(what)")
            case let .special(what):
                if !namesExactly(address, port: port) { return .deny("\(host) resolves to \(address), \(what) the allowlist does not name") }
            case .publicAddress: break
            }
        }
        return .allow(addresses[0])
    }
}
