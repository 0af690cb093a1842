#if os(Linux)
import CHyperKVM
import Testing

/// Recomputes an ioctl number the way the kernel's `_IOC` macro does.
func ioctlNumber(direction: UInt, number: UInt, size: Int = 0) -> UInt {
    (direction << 30) | (UInt(size) << 16) | (0xAE << 8) | number
}

let none: UInt = 0
let write: UInt = 1
let read: UInt = 2
let readWrite: UInt = 3

@Suite("KVM ioctl numbers")
struct KVMIoctlNumberTests {
    /// Each shim getter against the number from the KVM API documentation, sized by the Swift view of the struct.
    @Test func shimNumbersMatchTheKernelEncoding() {
        let table: [(String, UInt, UInt)] = [
            ("KVM_GET_API_VERSION", chyper_KVM_GET_API_VERSION(), ioctlNumber(direction: none, number: 0x00)),
            ("KVM_CREATE_VM", chyper_KVM_CREATE_VM(), ioctlNumber(direction: none, number: 0x01)),
            ("KVM_GET_MSR_INDEX_LIST", chyper_KVM_GET_MSR_INDEX_LIST(), ioctlNumber(direction: readWrite, number: 0x02, size: MemoryLayout<kvm_msr_list>.size)),
            ("KVM_CHECK_EXTENSION", chyper_KVM_CHECK_EXTENSION(), ioctlNumber(direction: none, number: 0x03)),
            ("KVM_GET_VCPU_MMAP_SIZE", chyper_KVM_GET_VCPU_MMAP_SIZE(), ioctlNumber(direction: none, number: 0x04)),
            ("KVM_GET_SUPPORTED_CPUID", chyper_KVM_GET_SUPPORTED_CPUID(), ioctlNumber(direction: readWrite, number: 0x05, size: MemoryLayout<kvm_cpuid2>.size)),
            ("KVM_CREATE_VCPU", chyper_KVM_CREATE_VCPU(), ioctlNumber(direction: none, number: 0x41)),
            ("KVM_SET_USER_MEMORY_REGION", chyper_KVM_SET_USER_MEMORY_REGION(), ioctlNumber(direction: write, number: 0x46, size: MemoryLayout<kvm_userspace_memory_region>.size)),
            ("KVM_SET_TSS_ADDR", chyper_KVM_SET_TSS_ADDR(), ioctlNumber(direction: none, number: 0x47)),
            ("KVM_SET_IDENTITY_MAP_ADDR", chyper_KVM_SET_IDENTITY_MAP_ADDR(), ioctlNumber(direction: write, number: 0x48, size: MemoryLayout<UInt64>.size)),
            ("KVM_CREATE_IRQCHIP", chyper_KVM_CREATE_IRQCHIP(), ioctlNumber(direction: none, number: 0x60)),
            ("KVM_IRQ_LINE", chyper_KVM_IRQ_LINE(), ioctlNumber(direction: write, number: 0x61, size: MemoryLayout<kvm_irq_level>.size)),
            ("KVM_IRQFD", chyper_KVM_IRQFD(), ioctlNumber(direction: write, number: 0x76, size: MemoryLayout<kvm_irqfd>.size)),
            ("KVM_CREATE_PIT2", chyper_KVM_CREATE_PIT2(), ioctlNumber(direction: write, number: 0x77, size: MemoryLayout<kvm_pit_config>.size)),
            ("KVM_IOEVENTFD", chyper_KVM_IOEVENTFD(), ioctlNumber(direction: write, number: 0x79, size: MemoryLayout<kvm_ioeventfd>.size)),
            ("KVM_RUN", chyper_KVM_RUN(), ioctlNumber(direction: none, number: 0x80)),
            ("KVM_GET_REGS", chyper_KVM_GET_REGS(), ioctlNumber(direction: read, number: 0x81, size: MemoryLayout<kvm_regs>.size)),
            ("KVM_SET_REGS", chyper_KVM_SET_REGS(), ioctlNumber(direction: write, number: 0x82, size: MemoryLayout<kvm_regs>.size)),
            ("KVM_GET_SREGS", chyper_KVM_GET_SREGS(), ioctlNumber(direction: read, number: 0x83, size: MemoryLayout<kvm_sregs>.size)),
            ("KVM_SET_SREGS", chyper_KVM_SET_SREGS(), ioctlNumber(direction: write, number: 0x84, size: MemoryLayout<kvm_sregs>.size)),
            ("KVM_GET_MSRS", chyper_KVM_GET_MSRS(), ioctlNumber(direction: readWrite, number: 0x88, size: MemoryLayout<kvm_msrs>.size)),
            ("KVM_SET_MSRS", chyper_KVM_SET_MSRS(), ioctlNumber(direction: write, number: 0x89, size: MemoryLayout<kvm_msrs>.size)),
            ("KVM_GET_FPU", chyper_KVM_GET_FPU(), ioctlNumber(direction: read, number: 0x8C, size: MemoryLayout<kvm_fpu>.size)),
            ("KVM_SET_FPU", chyper_KVM_SET_FPU(), ioctlNumber(direction: write, number: 0x8D, size: MemoryLayout<kvm_fpu>.size)),
            ("KVM_GET_LAPIC", chyper_KVM_GET_LAPIC(), ioctlNumber(direction: read, number: 0x8E, size: MemoryLayout<kvm_lapic_state>.size)),
            ("KVM_SET_LAPIC", chyper_KVM_SET_LAPIC(), ioctlNumber(direction: write, number: 0x8F, size: MemoryLayout<kvm_lapic_state>.size)),
            ("KVM_SET_CPUID2", chyper_KVM_SET_CPUID2(), ioctlNumber(direction: write, number: 0x90, size: MemoryLayout<kvm_cpuid2>.size)),
            ("KVM_GET_MP_STATE", chyper_KVM_GET_MP_STATE(), ioctlNumber(direction: read, number: 0x98, size: MemoryLayout<kvm_mp_state>.size)),
            ("KVM_SET_MP_STATE", chyper_KVM_SET_MP_STATE(), ioctlNumber(direction: write, number: 0x99, size: MemoryLayout<kvm_mp_state>.size)),
        ]
        for (name, fromShim, computed) in table {
            #expect(fromShim == computed, "\(name): shim 0x\(String(fromShim, radix: 16)), computed 0x\(String(computed, radix: 16))")
        }
    }

    /// Struct sizes that the kernel ABI fixes; a mismatch means the header import changed shape.
    @Test func structSizesMatchTheABI() {
        #expect(MemoryLayout<kvm_regs>.size == 144)
        #expect(MemoryLayout<kvm_userspace_memory_region>.size == 32)
        #expect(MemoryLayout<kvm_lapic_state>.size == 1024)
        #expect(MemoryLayout<kvm_run>.size == 2352)
        #expect(chyper_KVM_SET_USER_MEMORY_REGION() == 0x4020_AE46)
        #expect(chyper_KVM_GET_REGS() == 0x8090_AE81)
    }
}
#endif
