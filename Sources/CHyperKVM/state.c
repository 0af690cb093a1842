// Saving and restoring a KVM vCPU's and VM's state (see CHyperKVM.h), for snapshots.
#include "CHyperKVM.h"

#ifdef __linux__
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

int chyper_vcpu_save(int kvm_fd, int vcpu_fd, struct kvm_run *run, chyper_vcpu_state *state) {
    memset(state, 0, sizeof *state);
    // An I/O exit completes (the instruction retires) only on the next KVM_RUN: run once without entering.
    __atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    int entered = ioctl(vcpu_fd, KVM_RUN, 0);
    int saved = errno;
    __atomic_store_n(&run->immediate_exit, 0, __ATOMIC_SEQ_CST);
    if (entered == 0 || saved != EINTR) {
        errno = entered == 0 ? EBUSY : saved;
        return -1;
    }
    if (ioctl(vcpu_fd, KVM_GET_MP_STATE, &state->mp_state) != 0) return -1;
    if (ioctl(vcpu_fd, KVM_GET_REGS, &state->regs) != 0) return -1;
    if (ioctl(vcpu_fd, KVM_GET_SREGS, &state->sregs) != 0) return -1;
    if (ioctl(vcpu_fd, KVM_GET_XSAVE, (struct kvm_xsave *)state->xsave) != 0) return -1;
    if (ioctl(vcpu_fd, KVM_GET_XCRS, &state->xcrs) != 0) return -1;
    if (ioctl(vcpu_fd, KVM_GET_DEBUGREGS, &state->debugregs) != 0) return -1;
    if (ioctl(vcpu_fd, KVM_GET_LAPIC, &state->lapic) != 0) return -1;
    if (ioctl(vcpu_fd, KVM_GET_VCPU_EVENTS, &state->events) != 0) return -1;
    union {
        struct kvm_msr_list list;
        char bytes[sizeof(struct kvm_msr_list) + 256 * sizeof(__u32)];
    } list;
    list.list.nmsrs = 256;
    if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, &list) != 0) return -1;
    union {
        struct kvm_msrs header;
        char bytes[sizeof(struct kvm_msrs) + 256 * sizeof(struct kvm_msr_entry)];
    } msrs;
    memset(&msrs, 0, sizeof msrs);
    msrs.header.nmsrs = list.list.nmsrs;
    for (unsigned i = 0; i < list.list.nmsrs; i++) msrs.header.entries[i].index = list.list.indices[i];
    int read = ioctl(vcpu_fd, KVM_GET_MSRS, &msrs);
    if (read < 0) return -1;
    // KVM stops at the first MSR it cannot read; what it read is kept.
    state->msr_count = (unsigned)read;
    memcpy(state->msrs, msrs.header.entries, sizeof(struct kvm_msr_entry) * (size_t)read);
    return 0;
}

int chyper_vcpu_restore(int vcpu_fd, const chyper_vcpu_state *state, const char **failed_step, unsigned int *failed_msr) {
    *failed_step = "check";
    *failed_msr = 0;
    if (state->msr_count > 256) {
        errno = EINVAL;
        return -1;
    }
    *failed_step = "KVM_SET_MP_STATE";
    if (ioctl(vcpu_fd, KVM_SET_MP_STATE, &state->mp_state) != 0) return -1;
    *failed_step = "KVM_SET_REGS";
    if (ioctl(vcpu_fd, KVM_SET_REGS, &state->regs) != 0) return -1;
    *failed_step = "KVM_SET_SREGS";
    if (ioctl(vcpu_fd, KVM_SET_SREGS, &state->sregs) != 0) return -1;
    *failed_step = "KVM_SET_XSAVE";
    if (ioctl(vcpu_fd, KVM_SET_XSAVE, (const struct kvm_xsave *)state->xsave) != 0) return -1;
    *failed_step = "KVM_SET_XCRS";
    // A host CPU without XSAVE reports no XCRs, and refuses to set any.
    if (state->xcrs.nr_xcrs > 0 && ioctl(vcpu_fd, KVM_SET_XCRS, &state->xcrs) != 0) return -1;
    *failed_step = "KVM_SET_DEBUGREGS";
    if (ioctl(vcpu_fd, KVM_SET_DEBUGREGS, &state->debugregs) != 0) return -1;
    *failed_step = "KVM_SET_LAPIC";
    if (ioctl(vcpu_fd, KVM_SET_LAPIC, &state->lapic) != 0) return -1;
    *failed_step = "KVM_SET_MSRS";
    union {
        struct kvm_msrs header;
        char bytes[sizeof(struct kvm_msrs) + 256 * sizeof(struct kvm_msr_entry)];
    } msrs;
    memset(&msrs, 0, sizeof msrs);
    msrs.header.nmsrs = state->msr_count;
    memcpy(msrs.header.entries, state->msrs, sizeof(struct kvm_msr_entry) * state->msr_count);
    int written = ioctl(vcpu_fd, KVM_SET_MSRS, &msrs);
    if (written < 0) return -1;
    if ((unsigned)written != state->msr_count) {
        *failed_msr = state->msrs[written].index;
        errno = EINVAL;
        return -1;
    }
    // Pending events last: they refer to the state above.
    *failed_step = "KVM_SET_VCPU_EVENTS";
    if (ioctl(vcpu_fd, KVM_SET_VCPU_EVENTS, &state->events) != 0) return -1;
    return 0;
}

int chyper_vm_save(int vm_fd, chyper_vm_state *state) {
    memset(state, 0, sizeof *state);
    state->pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
    state->pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
    state->ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
    if (ioctl(vm_fd, KVM_GET_IRQCHIP, &state->pic_master) != 0) return -1;
    if (ioctl(vm_fd, KVM_GET_IRQCHIP, &state->pic_slave) != 0) return -1;
    if (ioctl(vm_fd, KVM_GET_IRQCHIP, &state->ioapic) != 0) return -1;
    if (ioctl(vm_fd, KVM_GET_PIT2, &state->pit) != 0) return -1;
    if (ioctl(vm_fd, KVM_GET_CLOCK, &state->clock) != 0) return -1;
    return 0;
}

int chyper_vm_restore(int vm_fd, const chyper_vm_state *state) {
    if (ioctl(vm_fd, KVM_SET_IRQCHIP, &state->pic_master) != 0) return -1;
    if (ioctl(vm_fd, KVM_SET_IRQCHIP, &state->pic_slave) != 0) return -1;
    if (ioctl(vm_fd, KVM_SET_IRQCHIP, &state->ioapic) != 0) return -1;
    if (ioctl(vm_fd, KVM_SET_PIT2, &state->pit) != 0) return -1;
    // Only the clock value: the flags KVM reports (stable, realtime) are not for setting.
    struct kvm_clock_data clock;
    memset(&clock, 0, sizeof clock);
    clock.clock = state->clock.clock;
    if (ioctl(vm_fd, KVM_SET_CLOCK, &clock) != 0) return -1;
    return 0;
}
#endif
