#if os(Linux)
import CHyperKVM
import Glibc
import Hyper

/// The `Hypervisor` protocol over /dev/kvm.
///
/// Setup follows KVM's required order: TSS and identity-map addresses, the in-kernel irqchip and PIT before
/// any vCPU, guest memory as one user memory region, then per vCPU: CPUID before registers.
public struct KVMHypervisor: Hypervisor {
    /// The name saved states carry.
    static let acceleratorName = "kvm"

    /// The KVM device node.
    public let devicePath: String

    /// Creates the accelerator for a device node.
    public init(devicePath: String = "/dev/kvm") { self.devicePath = devicePath }

    public func makeVirtualMachine(memory: GuestMemory) throws(HyperError) -> any VirtualMachine {
        do {
            return try KVMVirtualMachine(devicePath: devicePath, memory: memory)
        } catch {
            throw error.hyperError
        }
    }
}

/// Guest-physical addresses KVM needs for its own use on Intel (three pages of TSS, one identity-map page),
/// just below the IOAPIC and LAPIC windows.
enum KVMLayout {
    static let tssAddress: UInt = 0xFFFB_D000
    static let identityMapAddress: UInt64 = 0xFFFB_C000
}

/// An irqfd bound to one GSI of a VM's in-kernel IOAPIC.
final class KVMInterruptTrigger: InterruptTrigger {
    let eventDescriptor: Int32
    /// Keeps the VM (and so the binding) alive as long as the trigger.
    private let machine: KVMVirtualMachine

    init(eventDescriptor: Int32, machine: KVMVirtualMachine) {
        self.eventDescriptor = eventDescriptor
        self.machine = machine
    }

    deinit { close(eventDescriptor) }

    func fire() { chyper_irqfd_fire(eventDescriptor) }
}

/// One KVM virtual machine.
final class KVMVirtualMachine: VirtualMachine, @unchecked Sendable {
    let memory: GuestMemory
    let systemDescriptor: Int32
    let descriptor: Int32
    let runAreaSize: Int

    init(devicePath: String, memory: GuestMemory) throws(KVMError) {
        self.memory = memory
        // SAFETY: open only reads the NUL-terminated path during the call.
        let system = unsafe open(devicePath, O_RDWR | O_CLOEXEC)
        guard system >= 0 else { throw KVMError.systemCall(operation: "open \(devicePath)", errorNumber: errno) }
        systemDescriptor = system
        var vm: Int32 = -1
        do throws(KVMError) {
            let version = try KVMSystem.ioctl(system, chyper_KVM_GET_API_VERSION(), value: 0, operation: "KVM_GET_API_VERSION")
            guard version == KVMProbe.requiredAPIVersion else { throw KVMError.unavailable("KVM API version \(version)") }
            vm = try KVMSystem.ioctl(system, chyper_KVM_CREATE_VM(), value: 0, operation: "KVM_CREATE_VM")
            runAreaSize = Int(try KVMSystem.ioctl(system, chyper_KVM_GET_VCPU_MMAP_SIZE(), value: 0, operation: "KVM_GET_VCPU_MMAP_SIZE"))
        } catch {
            if vm >= 0 { close(vm) }
            close(system)
            throw error
        }
        descriptor = vm
        // Fully initialized from here: on a failure below, deinit closes both descriptors.
        // Guest memory goes in first, while the VM has no irqchip or PIT whose readers a memslot update must
        // wait for.
        var region = kvm_userspace_memory_region()
        region.slot = 0
        region.guest_phys_addr = 0
        region.memory_size = memory.size
        region.userspace_addr = memory.hostAddress
        try KVMSystem.ioctl(descriptor, chyper_KVM_SET_USER_MEMORY_REGION(), pointingTo: &region, operation: "KVM_SET_USER_MEMORY_REGION")
        _ = try KVMSystem.ioctl(descriptor, chyper_KVM_SET_TSS_ADDR(), value: KVMLayout.tssAddress, operation: "KVM_SET_TSS_ADDR")
        var identityMap = KVMLayout.identityMapAddress
        try KVMSystem.ioctl(descriptor, chyper_KVM_SET_IDENTITY_MAP_ADDR(), pointingTo: &identityMap, operation: "KVM_SET_IDENTITY_MAP_ADDR")
        _ = try KVMSystem.ioctl(descriptor, chyper_KVM_CREATE_IRQCHIP(), value: 0, operation: "KVM_CREATE_IRQCHIP")
        var pit = kvm_pit_config()
        try KVMSystem.ioctl(descriptor, chyper_KVM_CREATE_PIT2(), pointingTo: &pit, operation: "KVM_CREATE_PIT2")
    }

    deinit {
        close(descriptor)
        close(systemDescriptor)
    }

    func saveState() throws(HyperError) -> AcceleratorState {
        var bytes = [UInt8](repeating: 0, count: Int(chyper_vm_state_size()))
        // SAFETY: the buffer holds exactly one chyper_vm_state (its size from C).
        let result = unsafe bytes.withUnsafeMutableBytes { raw in
            unsafe chyper_vm_save(descriptor, raw.baseAddress!.assumingMemoryBound(to: chyper_vm_state.self))
        }
        guard result == 0 else { throw KVMError.systemCall(operation: "save the VM's state", errorNumber: errno).hyperError }
        return AcceleratorState(accelerator: KVMHypervisor.acceleratorName, bytes: bytes)
    }

    func restoreState(_ state: AcceleratorState) throws(HyperError) {
        guard state.accelerator == KVMHypervisor.acceleratorName, state.bytes.count == Int(chyper_vm_state_size()) else {
            throw HyperError(.invalidArgument, "a VM state from \(state.accelerator) (\(state.bytes.count) bytes) is not a KVM VM state of this build")
        }
        // SAFETY: the buffer holds exactly one chyper_vm_state, read by the call only.
        let result = unsafe state.bytes.withUnsafeBytes { raw in
            unsafe chyper_vm_restore(descriptor, raw.baseAddress!.assumingMemoryBound(to: chyper_vm_state.self))
        }
        guard result == 0 else { throw KVMError.systemCall(operation: "restore the VM's state", errorNumber: errno).hyperError }
    }

    func makeVCPU(index: Int) throws(HyperError) -> any VirtualCPU {
        do {
            return try KVMVirtualCPU(machine: self, index: index)
        } catch {
            throw error.hyperError
        }
    }

    /// An irqfd: one eventfd write delivers the interrupt in the kernel, from any thread, without an ioctl.
    func makeInterruptTrigger(line: UInt32) throws(HyperError) -> any InterruptTrigger {
        let fd = chyper_irqfd_create(descriptor, line)
        guard fd >= 0 else { throw KVMError.systemCall(operation: "KVM_IRQFD (GSI \(line))", errorNumber: errno).hyperError }
        return KVMInterruptTrigger(eventDescriptor: fd, machine: self)
    }

    func setInterruptLine(_ line: UInt32, active: Bool) throws(HyperError) {
        var level = kvm_irq_level()
        level.irq = line
        level.level = active ? 1 : 0
        do {
            try KVMSystem.ioctl(descriptor, chyper_KVM_IRQ_LINE(), pointingTo: &level, operation: "KVM_IRQ_LINE")
        } catch {
            throw error.hyperError
        }
    }
}
#endif
