// CHyperKVM: the few KVM helpers that are clearer in C (flexible-array ioctls, per-thread timers).
#include "CHyperKVM.h"

#ifdef __linux__
#include <errno.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void chyper_wakeup_handler(int signal_number) { (void)signal_number; }

int chyper_wakeup_arm(chyper_wakeup *wakeup, unsigned long long delay_ns) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = chyper_wakeup_handler;  // No SA_RESTART: KVM_RUN must return EINTR.
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGALRM, &action, NULL) != 0) return -1;
    struct sigevent event;
    memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_THREAD_ID;
    event.sigev_signo = SIGALRM;
    event._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    // The signal must reach this thread even where the caller's threads block it (thread pools do).
    sigset_t alarm_only;
    sigemptyset(&alarm_only);
    sigaddset(&alarm_only, SIGALRM);
    if (pthread_sigmask(SIG_UNBLOCK, &alarm_only, &wakeup->saved_mask) != 0) return -1;
    if (timer_create(CLOCK_MONOTONIC, &event, &wakeup->timer) != 0) {
        int saved = errno;
        pthread_sigmask(SIG_SETMASK, &wakeup->saved_mask, NULL);
        errno = saved;
        return -1;
    }
    wakeup->armed = 1;
    if (delay_ns == 0) delay_ns = 1;
    struct itimerspec when = {
        .it_interval = {0, 10 * 1000 * 1000},
        .it_value = {(time_t)(delay_ns / 1000000000ull), (long)(delay_ns % 1000000000ull)},
    };
    return timer_settime(wakeup->timer, 0, &when, NULL);
}

void chyper_wakeup_disarm(chyper_wakeup *wakeup) {
    if (!wakeup->armed) return;
    timer_delete(wakeup->timer);
    pthread_sigmask(SIG_SETMASK, &wakeup->saved_mask, NULL);
    wakeup->armed = 0;
}

// Normalizes KVM's supported CPUID for one vCPU of a single-socket guest. The host's table may be sparse
// (leaves missing, few feature bits); every step only touches leaves that are present.
int chyper_configure_cpuid(int kvm_fd, int vcpu_fd, unsigned apic_id) {
    int capacity = 256;
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof *cpuid + capacity * sizeof(struct kvm_cpuid_entry2));
    if (!cpuid) return -1;
    cpuid->nent = (unsigned)capacity - 1;  // Leave room for an inserted entry.
    if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) != 0) { int saved = errno; free(cpuid); errno = saved; return -1; }
    int tsc_deadline = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
    int has_topology_level0 = 0, has_topology_level1 = 0;
    for (unsigned i = 0; i < cpuid->nent; i++) {
        struct kvm_cpuid_entry2 *entry = &cpuid->entries[i];
        if (entry->function == 1) {
            entry->ecx |= 1u << 31;                                     // Running under a hypervisor.
            if (tsc_deadline) entry->ecx |= 1u << 24;                   // TSC-deadline timer mode.
            entry->ebx = (entry->ebx & 0x00FFFFFFu) | (apic_id << 24);  // Initial APIC id.
        } else if (entry->function == 0xB) {
            entry->edx = apic_id;                                       // x2APIC id in every subleaf.
            if (entry->index == 0) has_topology_level0 = 1;
            if (entry->index == 1) has_topology_level1 = 1;
        }
    }
    // KVM stopped reporting leaf 0xB subleaf 1 (the core level); add it when subleaf 0 is there.
    if (has_topology_level0 && !has_topology_level1 && cpuid->nent < (unsigned)capacity) {
        struct kvm_cpuid_entry2 *core = &cpuid->entries[cpuid->nent++];
        memset(core, 0, sizeof *core);
        core->function = 0xB;
        core->index = 1;
        core->flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
        core->eax = 0;          // Bits to shift to the next level: one core per socket here.
        core->ebx = 1;          // Logical processors at this level.
        core->ecx = (2u << 8) | 1;  // Level type: core; level number 1.
        core->edx = apic_id;
    }
    int result = ioctl(vcpu_fd, KVM_SET_CPUID2, cpuid);
    int saved = errno;
    free(cpuid);
    errno = saved;
    return result;
}

int chyper_get_cpuid_leaf(int vcpu_fd, unsigned function, unsigned index, unsigned registers[4]) {
    int capacity = 256;
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof *cpuid + capacity * sizeof(struct kvm_cpuid_entry2));
    if (!cpuid) return -1;
    cpuid->nent = (unsigned)capacity;
    int found = -1;
    if (ioctl(vcpu_fd, KVM_GET_CPUID2, cpuid) == 0) {
        for (unsigned i = 0; i < cpuid->nent; i++) {
            struct kvm_cpuid_entry2 *entry = &cpuid->entries[i];
            if (entry->function == function && entry->index == index) {
                registers[0] = entry->eax; registers[1] = entry->ebx; registers[2] = entry->ecx; registers[3] = entry->edx;
                found = 0;
                break;
            }
        }
        if (found != 0) errno = ENOENT;
    }
    int saved = errno;
    free(cpuid);
    errno = saved;
    return found;
}

static const struct { unsigned index; unsigned long long value; } boot_msrs[] = {
    {0x174, 0}, {0x175, 0}, {0x176, 0},                    // IA32_SYSENTER_CS, _ESP, _EIP
    {0xC0000081, 0}, {0xC0000082, 0}, {0xC0000083, 0},     // STAR, LSTAR, CSTAR
    {0xC0000084, 0}, {0xC0000102, 0},                      // SYSCALL_MASK, KERNEL_GS_BASE
    {0x10, 0},                                             // IA32_TSC
    {0x1A0, 1},                                            // IA32_MISC_ENABLE: fast strings
    {0x2FF, 0x806},                                        // MTRRdefType: enabled, write-back default
};

int chyper_boot_msr_count(void) { return (int)(sizeof boot_msrs / sizeof *boot_msrs); }

int chyper_set_boot_msrs(int vcpu_fd) {
    int count = chyper_boot_msr_count();
    struct kvm_msrs *msrs = calloc(1, sizeof *msrs + count * sizeof(struct kvm_msr_entry));
    if (!msrs) return -1;
    msrs->nmsrs = (unsigned)count;
    for (int i = 0; i < count; i++) {
        msrs->entries[i].index = boot_msrs[i].index;
        msrs->entries[i].data = boot_msrs[i].value;
    }
    int result = ioctl(vcpu_fd, KVM_SET_MSRS, msrs);
    int saved = errno;
    free(msrs);
    errno = saved;
    return result;
}

int chyper_get_msr(int vcpu_fd, unsigned index, unsigned long long *value) {
    struct kvm_msrs *request = calloc(1, sizeof *request + sizeof(struct kvm_msr_entry));
    if (!request) return -1;
    request->nmsrs = 1;
    request->entries[0].index = index;
    int result = ioctl(vcpu_fd, KVM_GET_MSRS, request);
    if (result == 1) *value = request->entries[0].data;
    int saved = errno;
    free(request);
    errno = saved;
    return result == 1 ? 0 : -1;
}

int chyper_configure_lint(int vcpu_fd) {
    struct kvm_lapic_state lapic;
    if (ioctl(vcpu_fd, KVM_GET_LAPIC, &lapic) != 0) return -1;
    unsigned lvt0, lvt1;
    memcpy(&lvt0, lapic.regs + 0x350, 4);
    memcpy(&lvt1, lapic.regs + 0x360, 4);
    lvt0 = (lvt0 & ~0x700u) | (7u << 8);  // Delivery mode ExtINT.
    lvt1 = (lvt1 & ~0x700u) | (4u << 8);  // Delivery mode NMI.
    memcpy(lapic.regs + 0x350, &lvt0, 4);
    memcpy(lapic.regs + 0x360, &lvt1, 4);
    return ioctl(vcpu_fd, KVM_SET_LAPIC, &lapic);
}

int chyper_read_lapic_register(int vcpu_fd, unsigned offset, unsigned *value) {
    struct kvm_lapic_state lapic;
    if (offset > sizeof lapic.regs - 4 || ioctl(vcpu_fd, KVM_GET_LAPIC, &lapic) != 0) { errno = EINVAL; return -1; }
    memcpy(value, lapic.regs + offset, 4);
    return 0;
}
#endif

int chyper_vcpu_thread_prepare(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = chyper_wakeup_handler;  // No SA_RESTART: KVM_RUN must return EINTR.
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGALRM, &action, NULL) != 0) return -1;
    sigset_t alarm_only;
    sigemptyset(&alarm_only);
    sigaddset(&alarm_only, SIGALRM);
    if (pthread_sigmask(SIG_UNBLOCK, &alarm_only, NULL) != 0) return -1;
    return (int)syscall(SYS_gettid);
}

void chyper_vcpu_kick(struct kvm_run *run, int thread_id) {
    __atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    if (thread_id > 0) syscall(SYS_tgkill, getpid(), thread_id, SIGALRM);
}

void chyper_vcpu_clear_kick(struct kvm_run *run) { __atomic_store_n(&run->immediate_exit, 0, __ATOMIC_SEQ_CST); }

int chyper_irqfd_create(int vm_fd, unsigned gsi) {
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return -1;
    struct kvm_irqfd request;
    memset(&request, 0, sizeof request);
    request.fd = (unsigned)fd;
    request.gsi = gsi;
    if (ioctl(vm_fd, KVM_IRQFD, &request) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

void chyper_irqfd_fire(int event_fd) {
    unsigned long long one = 1;
    ssize_t ignored = write(event_fd, &one, sizeof one);
    (void)ignored;
}
