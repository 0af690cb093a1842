import Hyper
import HyperFake
import HyperKVM
import HyperProcess

/// The one place that registers every backend this build has.
enum BackendCatalog {
    /// Returns a registry with kvm, process and fake, strongest isolation first.
    static func makeRegistry() -> BackendRegistry {
        BackendRegistry([KVMBackend(), ProcessBackend(), FakeBackend()])
    }
}
