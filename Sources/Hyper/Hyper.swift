// The hyperctl core: sandbox spec and policy, the backend protocol and registry, and the sandbox lifecycle.
// `Hyper` knows no concrete backend. Backends (`HyperKVM`, `HyperProcess`, `HyperFake`) depend on it,
// and only the `hyperctl` executable knows all of them.

/// The release of this build of the core.
public enum HyperRelease {
    /// The project's version, as `hyperctl version` prints it and reports record it.
    public static let version = "0.1.0"
}
