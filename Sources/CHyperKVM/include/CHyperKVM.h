// CHyperKVM: the KVM ioctl numbers and structures from <linux/kvm.h>, as Swift can import them.
//
// The _IO/_IOR/_IOW macros use sizeof and do not import into Swift, so each ioctl number is a static
// inline getter. The variadic ioctl() is wrapped in two typed functions. Nothing here holds state.
#ifndef CHYPERKVM_H
#define CHYPERKVM_H

#ifdef __linux__
#include <linux/kvm.h>
#include <sys/ioctl.h>

// MARK: ioctl calls with a typed argument.
static inline int chyper_ioctl_value(int fd, unsigned long request, unsigned long value) {
    return ioctl(fd, request, value);
}
static inline int chyper_ioctl_pointer(int fd, unsigned long request, void *argument) {
    return ioctl(fd, request, argument);
}

// MARK: ioctl numbers on /dev/kvm.
static inline unsigned long chyper_KVM_GET_API_VERSION(void) { return KVM_GET_API_VERSION; }
static inline unsigned long chyper_KVM_CREATE_VM(void) { return KVM_CREATE_VM; }
static inline unsigned long chyper_KVM_CHECK_EXTENSION(void) { return KVM_CHECK_EXTENSION; }
static inline unsigned long chyper_KVM_GET_VCPU_MMAP_SIZE(void) { return KVM_GET_VCPU_MMAP_SIZE; }
static inline unsigned long chyper_KVM_GET_SUPPORTED_CPUID(void) { return KVM_GET_SUPPORTED_CPUID; }
static inline unsigned long chyper_KVM_GET_MSR_INDEX_LIST(void) { return KVM_GET_MSR_INDEX_LIST; }

// MARK: ioctl numbers on a VM descriptor.
static inline unsigned long chyper_KVM_CREATE_VCPU(void) { return KVM_CREATE_VCPU; }
static inline unsigned long chyper_KVM_SET_USER_MEMORY_REGION(void) { return KVM_SET_USER_MEMORY_REGION; }
static inline unsigned long chyper_KVM_SET_TSS_ADDR(void) { return KVM_SET_TSS_ADDR; }
static inline unsigned long chyper_KVM_SET_IDENTITY_MAP_ADDR(void) { return KVM_SET_IDENTITY_MAP_ADDR; }
static inline unsigned long chyper_KVM_CREATE_IRQCHIP(void) { return KVM_CREATE_IRQCHIP; }
static inline unsigned long chyper_KVM_CREATE_PIT2(void) { return KVM_CREATE_PIT2; }
static inline unsigned long chyper_KVM_IRQ_LINE(void) { return KVM_IRQ_LINE; }
static inline unsigned long chyper_KVM_IRQFD(void) { return KVM_IRQFD; }
static inline unsigned long chyper_KVM_IOEVENTFD(void) { return KVM_IOEVENTFD; }

// MARK: ioctl numbers on a vCPU descriptor.
static inline unsigned long chyper_KVM_RUN(void) { return KVM_RUN; }
static inline unsigned long chyper_KVM_GET_REGS(void) { return KVM_GET_REGS; }
static inline unsigned long chyper_KVM_SET_REGS(void) { return KVM_SET_REGS; }
static inline unsigned long chyper_KVM_GET_SREGS(void) { return KVM_GET_SREGS; }
static inline unsigned long chyper_KVM_SET_SREGS(void) { return KVM_SET_SREGS; }
static inline unsigned long chyper_KVM_SET_CPUID2(void) { return KVM_SET_CPUID2; }
static inline unsigned long chyper_KVM_SET_MSRS(void) { return KVM_SET_MSRS; }
static inline unsigned long chyper_KVM_GET_MSRS(void) { return KVM_GET_MSRS; }
static inline unsigned long chyper_KVM_GET_LAPIC(void) { return KVM_GET_LAPIC; }
static inline unsigned long chyper_KVM_SET_LAPIC(void) { return KVM_SET_LAPIC; }
static inline unsigned long chyper_KVM_GET_FPU(void) { return KVM_GET_FPU; }
static inline unsigned long chyper_KVM_SET_FPU(void) { return KVM_SET_FPU; }
static inline unsigned long chyper_KVM_GET_MP_STATE(void) { return KVM_GET_MP_STATE; }
static inline unsigned long chyper_KVM_SET_MP_STATE(void) { return KVM_SET_MP_STATE; }

// MARK: Waking a vCPU thread out of KVM_RUN at a deadline.

#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

/// A per-thread timer that interrupts KVM_RUN (EINTR) on the thread that armed it.
typedef struct { timer_t timer; int armed; sigset_t saved_mask; } chyper_wakeup;

/// Arms a timer that signals the calling thread after `delay_ns`, then every 10 ms (so a wakeup that lands
/// just before KVM_RUN is not lost). Returns 0, or -1 with errno.
int chyper_wakeup_arm(chyper_wakeup *wakeup, unsigned long long delay_ns);
/// Stops and deletes the timer.
void chyper_wakeup_disarm(chyper_wakeup *wakeup);

/// Copies KVM's supported CPUID into the vCPU, normalized: the hypervisor bit, TSC-deadline where KVM has it,
/// `apic_id` in leaves 1 and 0xB, and leaf 0xB subleaf 1 when KVM omits it. Returns 0, or -1 with errno.
int chyper_configure_cpuid(int kvm_fd, int vcpu_fd, unsigned apic_id);
/// Reads one CPUID leaf of the vCPU (eax, ebx, ecx, edx). Returns 0, or -1 with errno (ENOENT: no such leaf).
int chyper_get_cpuid_leaf(int vcpu_fd, unsigned function, unsigned index, unsigned registers[4]);

/// Sets the MSRs a booting kernel expects (SYSENTER/SYSCALL MSRs and TSC zeroed, fast strings on, MTRRs on
/// with write-back default). Returns how many KVM accepted, or -1 with errno.
int chyper_set_boot_msrs(int vcpu_fd);
/// The number of MSRs `chyper_set_boot_msrs` sets.
int chyper_boot_msr_count(void);
/// Reads one MSR into `value`. Returns 0, or -1 with errno.
int chyper_get_msr(int vcpu_fd, unsigned index, unsigned long long *value);

/// Routes the local APIC's LINT0 to ExtINT (the PIC) and LINT1 to NMI, as a PC's firmware would.
/// Returns 0, or -1 with errno.
int chyper_configure_lint(int vcpu_fd);
/// Reads a 32-bit local APIC register at `offset`. Returns 0, or -1 with errno.
int chyper_read_lapic_register(int vcpu_fd, unsigned offset, unsigned *value);

// MARK: Stopping a vCPU thread from another thread, and interrupts through irqfd.

/// Prepares the calling (vCPU) thread to be kicked: installs the no-op SIGALRM handler and unblocks it.
/// Returns the thread id, or -1 with errno.
int chyper_vcpu_thread_prepare(void);
/// Makes KVM_RUN on `run`'s vCPU return at once (immediate_exit) and interrupts thread `thread_id` if it
/// is inside KVM_RUN now (when thread_id > 0).
void chyper_vcpu_kick(struct kvm_run *run, int thread_id);
/// Clears immediate_exit before the vCPU runs again.
void chyper_vcpu_clear_kick(struct kvm_run *run);

/// Creates an eventfd and binds it to `gsi` with KVM_IRQFD. Returns the eventfd, or -1 with errno.
int chyper_irqfd_create(int vm_fd, unsigned gsi);
/// Fires an irqfd.
void chyper_irqfd_fire(int event_fd);

// MARK: Saving and restoring state, for snapshots.

/// Everything KVM holds about one vCPU, as one plain struct (saved and restored whole).
typedef struct {
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    __u32 xsave[1024];  // struct kvm_xsave's 4 KiB region (KVM_GET_XSAVE fills no more)
    struct kvm_xcrs xcrs;
    struct kvm_debugregs debugregs;
    struct kvm_lapic_state lapic;
    struct kvm_mp_state mp_state;
    struct kvm_vcpu_events events;
    unsigned msr_count;
    struct kvm_msr_entry msrs[256];
} chyper_vcpu_state;

/// Everything KVM holds about a VM besides memory and vCPUs: the PICs, the IOAPIC, the PIT and the clock.
typedef struct {
    struct kvm_irqchip pic_master;
    struct kvm_irqchip pic_slave;
    struct kvm_irqchip ioapic;
    struct kvm_pit_state2 pit;
    struct kvm_clock_data clock;
} chyper_vm_state;

/// The sizes of the two structs, for callers that keep them as bytes.
static inline unsigned long chyper_vcpu_state_size(void) { return sizeof(chyper_vcpu_state); }
static inline unsigned long chyper_vm_state_size(void) { return sizeof(chyper_vm_state); }

/// Completes an exit's pending I/O (one KVM_RUN with immediate_exit), then reads every part of the vCPU's
/// state, the MSRs of KVM's index list included. Returns 0, or -1 with errno.
int chyper_vcpu_save(int kvm_fd, int vcpu_fd, struct kvm_run *run, chyper_vcpu_state *state);
/// Writes a saved state into a vCPU whose CPUID is set, in the order KVM needs. Returns 0, or -1 with errno,
/// `*failed_step` naming the call that failed (a static string) and `*failed_msr` the MSR KVM refused.
int chyper_vcpu_restore(int vcpu_fd, const chyper_vcpu_state *state, const char **failed_step, unsigned int *failed_msr);
/// Reads the VM's interrupt controllers, PIT and clock. Returns 0, or -1 with errno.
int chyper_vm_save(int vm_fd, chyper_vm_state *state);
/// Writes them back. Returns 0, or -1 with errno.
int chyper_vm_restore(int vm_fd, const chyper_vm_state *state);

#endif // __linux__
#endif // CHYPERKVM_H
