import Testing
@testable import Hyper

/// Returns the message of the `HyperError` that `body` throws, or nil when it does not throw.
func errorMessage<T>(_ body: () throws(HyperError) -> T) -> String? {
    do {
        _ = try body()
        return nil
    } catch {
        return error.message
    }
}

@Suite("Sandbox spec")
struct SpecTests {
    @Test func decodesEveryField() throws {
        let json = """
        {
          "command": ["make", "test"],
          "env": {"CI": "1"},
          "workdir": "/src",
          "workspace": "project",
          "mounts": [{"source": "data", "destination": "/data", "readOnly": true}, "/cache:/cache"],
          "network": {"allow": ["pypi.org:443", "*.example.org"]},
          "secrets": {"TOKEN": "env:TOKEN", "KEY": "file:keys/deploy"},
          "limits": {"memory": "2G", "cpus": 1.5, "pids": 512, "timeout": "5m"},
          "interactive": true,
          "tty": false,
          "docker": true
        }
        """
        let spec = try SandboxSpec.decode(json: json, baseDirectory: "/home/u")
        #expect(spec.command == ["make", "test"])
        #expect(spec.environment == [EnvironmentVariable(name: "CI", value: "1")])
        #expect(spec.workingDirectory == "/src")
        #expect(spec.workspace == "/home/u/project")
        #expect(spec.mounts == [Mount(source: "/home/u/data", destination: "/data", readOnly: true),
                                Mount(source: "/cache", destination: "/cache")])
        #expect(spec.network == .allow([NetworkDestination(host: "pypi.org", port: 443), NetworkDestination(host: "*.example.org")]))
        #expect(spec.secrets == [Secret(name: "TOKEN", source: .environment("TOKEN")), Secret(name: "KEY", source: .file("/home/u/keys/deploy"))])
        #expect(spec.limits == ResourceLimits(memoryBytes: 2 << 30, cpus: 1.5, pids: 512, timeout: .seconds(300)))
        #expect(spec.interactive && !spec.tty)
        #expect(spec.docker && spec.requiredFeatures.contains(.docker))
        // The spec's JSON form keeps it.
        #expect(try SandboxSpec.decode(json: spec.document.compactText, baseDirectory: "/").docker)
        #expect(spec.summary["docker"] == .bool(true))
        #expect(try !SandboxSpec.decode(json: "{}", baseDirectory: "/").docker)
        #expect(errorMessage { () throws(HyperError) in try SandboxSpec.decode(json: #"{"docker": "yes"}"#, baseDirectory: "/") }?.contains("docker") == true)
    }

    @Test(arguments: [
        (#"{"memory": "64M"}"#, #"memory: unknown key"#),
        (#"{"limits": {"memory": "lots"}}"#, #"limits.memory: "lots" is not a size"#),
        (#"{"limits": {"timeout": "-1s"}}"#, #"limits.timeout: "-1s" is not a positive duration"#),
        (#"{"limits": {"timeout": 30}}"#, #"limits.timeout: expected a duration string such as "30s", got a number 30"#),
        (#"{"limits": {"cpus": 0}}"#, "limits.cpus: 0 is out of range"),
        (#"{"limits": {"pids": 2.5}}"#, "limits.pids: 2.5 is not a whole number"),
        (#"{"limits": {"swap": "1G"}}"#, "limits.swap: unknown key"),
        (#"{"command": "ls -l"}"#, #"command: expected an array of strings, got a string "ls -l""#),
        (#"{"command": ["ls", 3]}"#, "command[1]: expected a string, got a number 3"),
        (#"{"tty": "yes"}"#, #"tty: expected true or false, got a string "yes""#),
        (#"{"network": "all"}"#, #"network: expected "none" or {"allow": [...]}"#),
        (#"{"network": {"allow": ["bad host"]}}"#, #"network.allow[0]: net: destination "bad host" has an invalid host name"#),
        (#"{"network": {"allow": ["x.org:99999"]}}"#, #"has an invalid port "99999""#),
        (#"{"secrets": {"T": "hunter2"}}"#, "secret T: the value source must be file:PATH or env:VAR"),
        (#"{"env": {"1X": "v"}}"#, #"env: "1X" is not a valid variable name"#),
        (#"{"mounts": [{"source": "/a"}]}"#, #"mounts[0]: needs both "source" and "destination""#),
        (#"{"mounts": ["/a:/b:rx"]}"#, #"has option "rx""#),
        ("[1]", "spec: expected an object, got an array"),
        ("{", "spec: invalid JSON at line 1, column 2"),
    ])
    func decodingErrorsNameTheFieldAndValue(json: String, expected: String) {
        let message = errorMessage { () throws(HyperError) in try SandboxSpec.decode(json: json, baseDirectory: "/") }
        #expect(message?.contains(expected) == true, "message was: \(message ?? "no error")")
    }

    @Test func flagParsers() throws {
        #expect(try Mount.parse("/a:/b:ro") == Mount(source: "/a", destination: "/b", readOnly: true))
        #expect(try NetworkPolicy.parse("none") == .none)
        #expect(try NetworkPolicy.parse("allow:[::1]:8080,Example.org") ==
                .allow([NetworkDestination(host: "::1", port: 8080), NetworkDestination(host: "example.org")]))
        #expect(try Secret.parse("T=file:/run/t") == Secret(name: "T", source: .file("/run/t")))
        #expect(try Secret.parse("T=env:V@api.example.com,*.x.org:8080") ==
                Secret(name: "T", source: .environment("V"), injectedInto: [NetworkDestination(host: "api.example.com"), NetworkDestination(host: "*.x.org", port: 8080)]))
        #expect(try Secret.parse("T=file:/a@b/t") == Secret(name: "T", source: .file("/a@b/t")), "an @ inside a path is the path's")
        #expect(errorMessage { () throws(HyperError) in try Secret.parse("T=env:V@") }?.contains("injection destination \"\" is invalid") == true)
        #expect(try EnvironmentVariable.parse("A=b=c") == EnvironmentVariable(name: "A", value: "b=c"))
        #expect(errorMessage { () throws(HyperError) in try NetworkPolicy.parse("allow:::1") }?.contains("without brackets") == true)
        #expect(errorMessage { () throws(HyperError) in try NetworkPolicy.parse("some") }?.contains("not none or allow") == true)
        #expect(errorMessage { () throws(HyperError) in try EnvironmentVariable.parse("NOVALUE") }?.contains("not NAME=VALUE") == true)
        #expect(errorMessage { () throws(HyperError) in try Mount.parse("/only") }?.contains("not SRC:DST") == true)
    }

    @Test func validationChecksTheHost() throws {
        var spec = SandboxSpec()
        spec.command = ["true"]
        spec.workspace = "/no/such/workspace"
        #expect(errorMessage { () throws(HyperError) in try spec.validated() } == "workspace: /no/such/workspace does not exist")
        spec.workspace = "/etc/hostname"
        #expect(errorMessage { () throws(HyperError) in try spec.validated() }?.contains("is not a directory") == true)
        spec.workspace = "/tmp"
        spec.command = []
        #expect(errorMessage { () throws(HyperError) in try spec.validated() }?.hasPrefix("command: empty") == true)
        spec.command = ["true"]
        spec.workingDirectory = "relative"
        #expect(errorMessage { () throws(HyperError) in try spec.validated() } == "workdir: relative must be an absolute path")
        spec.workingDirectory = nil
        spec.mounts = [Mount(source: "/no/such/source", destination: "/x")]
        #expect(errorMessage { () throws(HyperError) in try spec.validated() } == "mounts[0].source: /no/such/source does not exist")
        spec.mounts = [Mount(source: "/usr", destination: "/x/../etc")]
        #expect(errorMessage { () throws(HyperError) in try spec.validated() }?.contains("must not contain '..'") == true)
        spec.mounts = []
        spec.secrets = [Secret(name: "S", source: .environment("HYPERCTL_TEST_SURELY_UNSET_VARIABLE"))]
        #expect(errorMessage { () throws(HyperError) in try spec.validated() }?.contains("is not set") == true)
        spec.secrets = [Secret(name: "S", source: .file("/no/such/secret"))]
        #expect(errorMessage { () throws(HyperError) in try spec.validated() }?.contains("not readable") == true)
        spec.secrets = []
        let valid = try spec.validated()
        #expect(valid.workspace == (try HostSystem.realPath("/tmp")))
    }

    @Test func injectedSecretsNeedTheirDestinationsOnTheAllowlist() throws {
        var spec = SandboxSpec()
        spec.command = ["true"]
        spec.workspace = "/tmp"
        spec.secrets = [Secret(name: "T", source: .file("/etc/hostname"), injectedInto: [NetworkDestination(host: "api.example.com", port: 80)])]
        #expect(errorMessage { () throws(HyperError) in try spec.validated() }?.contains("needs a network allowlist") == true)
        spec.network = .allow([NetworkDestination(host: "other.example.com")])
        #expect(errorMessage { () throws(HyperError) in try spec.validated() } ==
                "secret T: the injection destination api.example.com:80 is not on the network allowlist")
        spec.network = .allow([NetworkDestination(host: "*.example.com", port: 80)])
        _ = try spec.validated()
        #expect(spec.summary.compactText.contains(#""injectedSecrets":{"T":["api.example.com:80"]}"#))
    }

    @Test func destinationsMatchAndOverlap() {
        let wildcard = NetworkDestination(host: "*.example.com", port: 443)
        #expect(wildcard.matches(host: "API.example.com", port: 443))
        #expect(!wildcard.matches(host: "example.com", port: 443) && !wildcard.matches(host: "api.example.com", port: 80))
        #expect(NetworkDestination(host: "::1").matches(host: "0:0::1", port: 9))
        #expect(wildcard.overlaps(NetworkDestination(host: "a.example.com")) && wildcard.overlaps(NetworkDestination(host: "*.b.example.com")))
        #expect(!wildcard.overlaps(NetworkDestination(host: "example.com")) && !wildcard.overlaps(NetworkDestination(host: "a.example.com", port: 80)))
    }

    @Test func summaryNeverShowsValues() {
        var spec = SandboxSpec()
        spec.command = ["env"]
        spec.environment = [EnvironmentVariable(name: "PASSWORD", value: "hunter2")]
        spec.secrets = [Secret(name: "TOKEN", source: .environment("HOST_TOKEN"))]
        let text = spec.summary.compactText
        #expect(text.contains("PASSWORD") && text.contains("TOKEN"))
        #expect(!text.contains("hunter2") && !text.contains("HOST_TOKEN"))
    }

    @Test func requiredFeaturesFollowTheSpec() {
        var spec = SandboxSpec()
        #expect(spec.requiredFeatures.isEmpty)
        spec.mounts = [Mount(source: "/a", destination: "/b", readOnly: true)]
        spec.network = .allow([NetworkDestination(host: "a.org")])
        spec.limits.timeout = .seconds(1)
        spec.tty = true
        #expect(spec.requiredFeatures == [.mounts, .readOnlyMounts, .networkAllowlist, .timeout, .tty])
    }
}
