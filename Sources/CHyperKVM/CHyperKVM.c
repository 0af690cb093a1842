// CHyperKVM: the few KVM helpers that are clearer in C (flexible-array ioctls, per-thread timers).
#include "CHyperKVM.h"

#ifdef __linux__
#include <errno.h>
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

int chyper_configure_cpuid(int kvm_fd, int vcpu_fd, unsigned apic_id) {
    int capacity = 256;
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof *cpuid + capacity * sizeof(struct kvm_cpuid_entry2));
    if (!cpuid) return -1;
    cpuid->nent = (unsigned)capacity;
    if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) != 0) { int saved = errno; free(cpuid); errno = saved; return -1; }
    for (unsigned i = 0; i < cpuid->nent; i++) {
        struct kvm_cpuid_entry2 *entry = &cpuid->entries[i];
        if (entry->function == 1) {
            entry->ecx |= 1u << 31;                               // Running under a hypervisor.
            entry->ebx = (entry->ebx & 0x00FFFFFFu) | (apic_id << 24);  // Initial APIC id.
        }
    }
    int result = ioctl(vcpu_fd, KVM_SET_CPUID2, cpuid);
    int saved = errno;
    free(cpuid);
    errno = saved;
    return result;
}
#endif
