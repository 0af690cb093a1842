// System calls of the guest agent (PID 1 in the sandbox VM) that Swift cannot make directly.
#define _GNU_SOURCE
#include "CHyperAgent.h"
#include "CHyperExec.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <linux/random.h>
#include <termios.h>
#include <unistd.h>

int chyper_agent_load_module(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    long result = syscall(SYS_finit_module, fd, "", 0);
    int saved = errno;
    close(fd);
    errno = saved;
    return result == 0 || saved == EEXIST ? 0 : -1;
}

static void child_fail(int report_fd, int error, const char *what, const char *subject) {
    dprintf(2, "hyperctl: %s%s%s\n", subject, what, strerror(error));
    ssize_t ignored = write(report_fd, &error, sizeof error);
    (void)ignored;
    _exit(error == ENOENT ? 127 : 126);
}

static void run_child(char *const argv[], char *const envp[], const char *directory, int input, int output,
                      int error, const char *terminal, const char *cgroup_procs, int report_fd) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int number = 1; number < NSIG; number++) signal(number, SIG_DFL);
    setsid();
    if (cgroup_procs) {
        int fd = open(cgroup_procs, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) child_fail(report_fd, errno, ": ", "join the sandbox cgroup");
        close(fd);
    }
    if (terminal) {
        int fd = open(terminal, O_RDWR);  // The first terminal a session leader opens becomes its own.
        if (fd < 0) child_fail(report_fd, errno, ": ", "open the terminal");
        input = output = error = fd;
    }
    if (dup2(input, 0) < 0 || dup2(output, 1) < 0 || dup2(error, 2) < 0) child_fail(report_fd, errno, ": ", "set up standard streams");
    if (directory && directory[0] && chdir(directory) != 0) {
        // As in the process backend: a missing working directory is the sandbox's failure (125).
        int saved = errno;
        dprintf(2, "hyperctl: working directory %s: %s\n", directory, strerror(saved));
        ssize_t ignored = write(report_fd, &saved, sizeof saved);
        (void)ignored;
        _exit(125);
    }
    const char *program = argv[0];
    int failure = chyper_exec_program(argv, envp);
    if (failure == ENOENT && !strchr(program, '/')) {
        dprintf(2, "hyperctl: %s: command not found\n", program);
        ssize_t ignored = write(report_fd, &failure, sizeof failure);
        (void)ignored;
        _exit(127);
    }
    child_fail(report_fd, failure, ": ", program);
}

pid_t chyper_agent_spawn(char *const argv[], char *const envp[], const char *directory, int input, int output,
                         int error, const char *terminal, const char *cgroup_procs, int *exec_error) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        int saved = errno;
        close(report[0]);
        close(report[1]);
        errno = saved;
        return -1;
    }
    if (pid == 0) {
        close(report[0]);
        run_child(argv, envp, directory, input, output, error, terminal, cgroup_procs, report[1]);
    }
    close(report[1]);
    int child_error = 0;
    ssize_t got;
    do { got = read(report[0], &child_error, sizeof child_error); } while (got < 0 && errno == EINTR);
    close(report[0]);
    *exec_error = got == (ssize_t)sizeof child_error ? child_error : 0;
    return pid;
}

int chyper_agent_open_terminal(char *name, size_t capacity, unsigned short rows, unsigned short columns) {
    int fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return -1;
    if (grantpt(fd) != 0 || unlockpt(fd) != 0 || ptsname_r(fd, name, capacity) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    chyper_agent_set_window(fd, rows, columns);
    return fd;
}

int chyper_agent_set_window(int fd, unsigned short rows, unsigned short columns) {
    struct winsize size = {.ws_row = rows, .ws_col = columns};
    return ioctl(fd, TIOCSWINSZ, &size);
}

int chyper_agent_make_raw(int fd) {
    struct termios settings;
    if (tcgetattr(fd, &settings) != 0) return -1;
    cfmakeraw(&settings);
    return tcsetattr(fd, TCSANOW, &settings);
}

int chyper_agent_child_signal_fd(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGPIPE);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) return -1;
    sigdelset(&set, SIGPIPE);
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

void chyper_agent_drain(int fd) {
    struct signalfd_siginfo info;
    while (read(fd, &info, sizeof info) == (ssize_t)sizeof info) {}
}

void chyper_agent_power_off(void) {
    sync();
    reboot(RB_AUTOBOOT);
    for (;;) pause();
}

int chyper_agent_pipe(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

// As PID 1 the agent starts with nothing mounted, but the Swift runtime reads /proc while it initializes
// (to find its own path). This runs before the runtime's initializers and mounts /proc first.
__attribute__((constructor(101))) static void chyper_agent_mount_proc_early(void) {
    if (getpid() != 1) return;
    mkdir("/proc", 0755);
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

int chyper_agent_loopback_up(void) {
    int control = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (control < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof request);
    strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
    int up = ioctl(control, SIOCGIFFLAGS, &request);
    if (up == 0) {
        request.ifr_flags |= IFF_UP | IFF_RUNNING;
        up = ioctl(control, SIOCSIFFLAGS, &request);
    }
    int saved = errno;
    close(control);
    errno = saved;
    return up;
}

int chyper_agent_loopback_listen(unsigned short port) {
    // The guest's loopback interface starts down: bring it up first.
    if (chyper_agent_loopback_up() != 0) return -1;
    int saved;
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listener < 0) return -1;
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 64) != 0) {
        saved = errno;
        close(listener);
        errno = saved;
        return -1;
    }
    return listener;
}

int chyper_agent_accept(int listener) {
    return accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
}

int chyper_agent_set_identity(const char *hostname, const void *seed, size_t length) {
    if (sethostname(hostname, strlen(hostname)) != 0) return -1;
    if (length == 0) return 0;
    // rand_pool_info ends in a flexible array: the bytes follow its header.
    union {
        struct rand_pool_info info;
        unsigned char raw[sizeof(struct rand_pool_info) + 512];
    } entropy;
    if (length > sizeof entropy.raw - sizeof(struct rand_pool_info)) {
        errno = EINVAL;
        return -1;
    }
    entropy.info.entropy_count = (int)(length * 8);
    entropy.info.buf_size = (int)length;
    memcpy(entropy.raw + sizeof(struct rand_pool_info), seed, length);
    int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
    if (fd < 0) return -1;
    int result = ioctl(fd, RNDADDENTROPY, &entropy.info);
    if (result == 0) result = ioctl(fd, RNDRESEEDCRNG);
    int saved = errno;
    close(fd);
    errno = saved;
    return result;
}

int chyper_agent_switch_root(const char *new_root) {
    // As switch_root does: the new root is moved over / and becomes the root of PID 1, which shares its
    // fs struct with the kernel's threads, so module autoloading finds /sbin/modprobe in the new root too.
    if (chdir(new_root) != 0) return -1;
    if (mount(new_root, "/", NULL, MS_MOVE, NULL) != 0) return -1;
    if (chroot(".") != 0) return -1;
    return chdir("/");
}

int chyper_agent_unix_connect(const char *path) {
    struct sockaddr_un address;
    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof address.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(address.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}
