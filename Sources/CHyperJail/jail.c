// hyper-jail: the single-threaded pre-exec helper of hyperctl's process backend.
//
// It lives inside every binary that links HyperProcess. HyperProcess re-executes its own binary
// (/proc/self/exe) with argv = {"hyper-jail", HYPER_JAIL_MARKER}; the constructor below sees that before the
// Swift runtime or any other code runs, becomes the helper, and never returns. So the helper is always the
// exact build of the caller, and the swift runtime never starts in it.
//
// hyperctl (a multi-threaded Swift program) spawns the helper with:
//   fd 3  the jail configuration (records written by HyperProcess's JailConfig), read to EOF;
//   fd 4  the status pipe: one text line per event ("created NS", "started NS", "exited CODE",
//         "signaled N", "timeout", "error MESSAGE");
//   fd 5  the lifeline: hyperctl holds the write end; EOF means hyperctl died, and the sandbox is killed.
// Everything between fork and exec happens here, in C, with no threads.
//
// Process tree:  helper (host side: id maps, idmapped binds, cgroups, supervision)  ->  init (cloned straight into
// new user, mount, pid, net, ipc and uts namespaces; pid 1: builds the root, drops privileges, reaps)  ->  the
// command (seccomp installed just before exec).
//
// A session sandbox's init runs no command: it keeps the namespaces alive until it is told to stop. Each
// command then runs through a joiner: the helper in join mode, which enters the running sandbox's cgroups and
// namespaces, becomes the sandbox user and forks the command into the sandbox's pid namespace, relaying
// signals (and a terminal) to it and reporting its status like a one-shot helper.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/mount.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "CHyperJail.h"
#include "CHyperExec.h"

#define CONFIG_FD 3
#define STATUS_FD 4
#define LIFELINE_FD 5
// The new root is a tmpfs mounted over /tmp in the private mount namespace; every host path to bind was
// opened as a detached mount beforehand, so nothing is looked up through the covered directory.
#define NEW_ROOT "/tmp"
#define MAX_ITEMS 512

// Record tags; the Swift side (JailConfig.swift) writes the same numbers.
enum {
    TAG_ARG = 1, TAG_ENV = 2, TAG_CWD = 3, TAG_BIND = 4, TAG_READONLY_PATH = 5, TAG_SECCOMP = 6,
    TAG_TIMEOUT_MS = 7, TAG_CGROUP_DIR = 8, TAG_CGROUP_WRITE = 9, TAG_CGROUP_PROCS = 10, TAG_RLIMIT = 11,
    TAG_HOSTNAME = 12, TAG_STDIN = 13, TAG_FILE = 14, TAG_SYMLINK = 15, TAG_UID = 16, TAG_GID = 17,
    TAG_CGROUP_KILL = 18, TAG_ID_BASE = 19, TAG_DIRECTORY = 20, TAG_TTY = 21, TAG_EGRESS_SOCKET = 22,
    TAG_SESSION = 23, TAG_JOIN_PID = 24, TAG_EGRESS_PORT = 25,
};

struct record { uint32_t tag; uint32_t length; char *value; };

struct config {
    struct record items[MAX_ITEMS];
    int count;
    char *argv[MAX_ITEMS + 1];
    char *envp[MAX_ITEMS + 1];
    const char *cwd;
    const char *hostname;
    long timeout_ms;
    int forward_stdin;
    int tty;
    const char *egress_socket;  // The host proxy's socket inside the sandbox, or NULL for no network.
    unsigned short egress_port; // Where the forwarder listens on the sandbox's 127.0.0.1.
    int session;                // Init keeps the namespaces alive and runs no command.
    pid_t join_pid;             // Join mode: the host pid of the running sandbox's init.
    unsigned inside_uid, inside_gid;
    unsigned long id_base;
    struct sock_fprog seccomp;
};

static struct config cfg;
// Whether the helper runs as host root (then the sandbox gets its own id range and idmapped binds).
static int host_root;

// MARK: - Reporting

static void status_line(const char *format, ...) {
    char line[1024];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(line, sizeof line - 1, format, args);
    va_end(args);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    ssize_t ignored = write(STATUS_FD, line, (size_t)n);
    (void)ignored;
}

static uint64_t monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

// Reports a failed setup step with errno and ends this process. Used in every process of the tree.
static void die(const char *step) {
    int saved = errno;
    status_line("error %s: %s", step, strerror(saved));
    _exit(125);
}

static void die_message(const char *message) {
    status_line("error %s", message);
    _exit(125);
}

// MARK: - Configuration

// Reads the whole configuration into one buffer, then splits it into records.
static void read_config(void) {
    size_t capacity = 1 << 16, length = 0;
    char *data = malloc(capacity);
    if (!data) die("allocate configuration");
    for (;;) {
        if (length == capacity) {
            if (capacity >= (64u << 20)) die_message("configuration too large");
            capacity *= 2;
            data = realloc(data, capacity);
            if (!data) die("allocate configuration");
        }
        ssize_t got = read(CONFIG_FD, data + length, capacity - length);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) die("read configuration");
        if (got == 0) break;
        length += (size_t)got;
    }
    close(CONFIG_FD);
    int argc = 0, envc = 0;
    size_t offset = 0;
    while (offset < length) {
        uint32_t header[2];
        if (length - offset < sizeof header) die_message("truncated configuration");
        memcpy(header, data + offset, sizeof header);
        offset += sizeof header;
        if (header[1] > length - offset || cfg.count >= MAX_ITEMS) die_message("malformed configuration");
        char *value = malloc((size_t)header[1] + 1);
        if (!value) die("allocate configuration");
        memcpy(value, data + offset, header[1]);
        value[header[1]] = 0;
        offset += header[1];
        struct record *r = &cfg.items[cfg.count++];
        r->tag = header[0];
        r->length = header[1];
        r->value = value;
        switch (r->tag) {
        case TAG_ARG: cfg.argv[argc++] = value; break;
        case TAG_ENV: cfg.envp[envc++] = value; break;
        case TAG_CWD: cfg.cwd = value; break;
        case TAG_HOSTNAME: cfg.hostname = value; break;
        case TAG_TIMEOUT_MS: cfg.timeout_ms = atol(value); break;
        case TAG_STDIN: cfg.forward_stdin = value[0] == '1'; break;
        case TAG_TTY: cfg.tty = value[0] == '1'; break;
        case TAG_EGRESS_SOCKET: cfg.egress_socket = value; break;
        case TAG_EGRESS_PORT: cfg.egress_port = (unsigned short)strtoul(value, NULL, 10); break;
        case TAG_SESSION: cfg.session = value[0] == '1'; break;
        case TAG_JOIN_PID: cfg.join_pid = (pid_t)strtol(value, NULL, 10); break;
        case TAG_UID: cfg.inside_uid = (unsigned)strtoul(value, NULL, 10); break;
        case TAG_GID: cfg.inside_gid = (unsigned)strtoul(value, NULL, 10); break;
        case TAG_ID_BASE: cfg.id_base = strtoul(value, NULL, 10); break;
        case TAG_SECCOMP:
            if (r->length % sizeof(struct sock_filter) != 0 || r->length == 0) die_message("malformed seccomp program");
            cfg.seccomp.len = (unsigned short)(r->length / sizeof(struct sock_filter));
            cfg.seccomp.filter = (struct sock_filter *)value;
            break;
        default: break;
        }
    }
    free(data);
    cfg.argv[argc] = NULL;
    cfg.envp[envc] = NULL;
    if (argc == 0 && !cfg.session) die_message("no command in configuration");
    if (!cfg.cwd) die_message("no working directory in configuration");
}

// Returns the second NUL-separated field of a record value ("a\0b" -> "b").
static const char *second_field(const struct record *r) {
    size_t first = strlen(r->value);
    if (first + 1 >= r->length + 1u) return "";
    return r->value + first + 1;
}

// MARK: - Small system helpers

static int write_file(const char *path, const char *content) {
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return -1;
    size_t length = strlen(content);
    ssize_t written = write(fd, content, length);
    int saved = errno;
    close(fd);
    errno = saved;
    return written == (ssize_t)length ? 0 : -1;
}

static int create_file(const char *path, const char *content, size_t length, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) return -1;
    size_t done = 0;
    while (done < length) {
        ssize_t n = write(fd, content + done, length - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) { close(fd); return -1; }
        done += (size_t)n;
    }
    return close(fd);
}

// Creates every missing directory of an absolute path.
static int make_directories(const char *path, mode_t mode) {
    char buffer[4096];
    if (strlen(path) >= sizeof buffer) { errno = ENAMETOOLONG; return -1; }
    strcpy(buffer, path);
    for (char *p = buffer + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buffer, mode) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buffer, mode) != 0 && errno != EEXIST) return -1;
    return 0;
}

static int sys_open_tree(int dirfd, const char *path, unsigned flags) {
    return (int)syscall(SYS_open_tree, dirfd, path, flags);
}
static int sys_move_mount(int from_fd, const char *from, int to_fd, const char *to, unsigned flags) {
    return (int)syscall(SYS_move_mount, from_fd, from, to_fd, to, flags);
}
static int sys_mount_setattr(int fd, const char *path, unsigned flags, struct mount_attr *attr) {
    return (int)syscall(SYS_mount_setattr, fd, path, flags, attr, sizeof *attr);
}
static int sys_pivot_root(const char *new_root, const char *put_old) {
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}
static int sys_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

// MARK: - User namespace for the sandbox

// Writes the id maps of `child`'s new user namespace and returns an fd for that namespace.
static int map_user_namespace(pid_t child) {
    char path[64], map[128];
    snprintf(path, sizeof path, "/proc/%d/setgroups", child);
    if (write_file(path, "deny") != 0 && errno != ENOENT) die("write setgroups");
    if (host_root) {
        // Root maps a 65536-id range far from real users: sandbox id N is host id BASE+N.
        snprintf(map, sizeof map, "0 %lu 65536\n", cfg.id_base);
    } else {
        // An unprivileged caller may only map itself; the sandbox user is the caller's own id.
        snprintf(map, sizeof map, "%u %u 1\n", cfg.inside_uid, (unsigned)geteuid());
    }
    snprintf(path, sizeof path, "/proc/%d/uid_map", child);
    if (write_file(path, map) != 0) die("write uid_map");
    if (!host_root) snprintf(map, sizeof map, "%u %u 1\n", cfg.inside_gid, (unsigned)getegid());
    snprintf(path, sizeof path, "/proc/%d/gid_map", child);
    if (write_file(path, map) != 0) die("write gid_map");
    snprintf(path, sizeof path, "/proc/%d/ns/user", child);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open the sandbox's user namespace");
    return fd;
}

// MARK: - Mount trees prepared on the host side

struct prepared_mount { int fd; const char *source; const char *destination; int is_file; int idmapped; };
static struct prepared_mount prepared[MAX_ITEMS];
static int prepared_count;

// Clones each host path to bind as a detached mount, read-only and/or idmapped as asked.
// Flags in the record: 'r' read-only, 'w' read-write, 'i' idmap to the sandbox range (root only), 'f' a file.
static void prepare_binds(void) {
    for (int i = 0; i < cfg.count; i++) {
        struct record *r = &cfg.items[i];
        if (r->tag != TAG_BIND) continue;
        const char *flags = r->value;
        const char *source = flags + strlen(flags) + 1;
        const char *destination = source + strlen(source) + 1;
        if (destination >= r->value + r->length + 1) die_message("malformed bind record");
        int fd = sys_open_tree(AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_NO_AUTOMOUNT);
        if (fd < 0) {
            status_line("error bind %s: %s", source, strerror(errno));
            _exit(125);
        }
        struct mount_attr attr = {0};
        attr.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        if (strchr(flags, 'r')) attr.attr_set |= MOUNT_ATTR_RDONLY;
        if (sys_mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr) != 0) die("set mount attributes");
        prepared[prepared_count].fd = fd;
        prepared[prepared_count].source = source;
        prepared[prepared_count].destination = destination;
        prepared[prepared_count].is_file = strchr(flags, 'f') != NULL;
        prepared[prepared_count].idmapped = strchr(flags, 'i') != NULL;
        prepared_count++;
    }
}

// Shifts ownership on the binds that ask for it into the sandbox's id range, through its user namespace.
// The detached mounts are shared with init, which inherited their descriptors, so it sees the change.
static void apply_idmaps(int userns_fd) {
    if (!host_root) return;  // Only root may create idmapped mounts; others map their own id instead.
    for (int i = 0; i < prepared_count; i++) {
        if (!prepared[i].idmapped) continue;
        struct mount_attr idmap = {0};
        idmap.attr_set = MOUNT_ATTR_IDMAP;
        idmap.userns_fd = (uint64_t)userns_fd;
        if (sys_mount_setattr(prepared[i].fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &idmap) != 0 &&
            sys_mount_setattr(prepared[i].fd, "", AT_EMPTY_PATH, &idmap) != 0) {
            status_line("error idmapped mount of %s: %s", prepared[i].source, strerror(errno));
            _exit(125);
        }
    }
}

// MARK: - cgroups and rlimits (host side)

static void join_cgroups(pid_t pid) {
    char number[32];
    snprintf(number, sizeof number, "%d", pid);
    for (int i = 0; i < cfg.count; i++) {
        struct record *r = &cfg.items[i];
        if (r->tag == TAG_CGROUP_DIR) {
            if (mkdir(r->value, 0755) != 0 && errno != EEXIST) die("create cgroup");
        } else if (r->tag == TAG_CGROUP_WRITE) {
            if (write_file(r->value, second_field(r)) != 0) {
                status_line("error cgroup %s = %s: %s", r->value, second_field(r), strerror(errno));
                _exit(125);
            }
        } else if (r->tag == TAG_CGROUP_PROCS) {
            if (write_file(r->value, number) != 0) die("join cgroup");
        }
    }
}

static void kill_cgroups(void) {
    for (int i = 0; i < cfg.count; i++) {
        if (cfg.items[i].tag == TAG_CGROUP_KILL) (void)write_file(cfg.items[i].value, "1");
    }
}

// Removes the sandbox's cgroups, innermost first, waiting for the last processes to be freed (up to about
// 10 s: on a loaded host the kernel can take seconds to release a killed tree).
static void remove_cgroups(void) {
    for (int i = cfg.count - 1; i >= 0; i--) {
        if (cfg.items[i].tag != TAG_CGROUP_DIR || strcmp(second_field(&cfg.items[i]), "keep") == 0) continue;
        for (int attempt = 0; attempt < 2000; attempt++) {
            if (rmdir(cfg.items[i].value) == 0 || errno == ENOENT) break;
            if (errno != EBUSY) break;
            struct timespec pause = {0, 5000000};
            nanosleep(&pause, NULL);
        }
    }
}

static int has_removable_cgroups(void) {
    for (int i = 0; i < cfg.count; i++) {
        if (cfg.items[i].tag == TAG_CGROUP_DIR && strcmp(second_field(&cfg.items[i]), "keep") != 0) return 1;
    }
    return 0;
}

static void apply_rlimits(void) {
    for (int i = 0; i < cfg.count; i++) {
        struct record *r = &cfg.items[i];
        if (r->tag != TAG_RLIMIT) continue;
        int resource = atoi(r->value);
        rlim_t value = (rlim_t)strtoull(second_field(r), NULL, 10);
        struct rlimit limit = {value, value};
        if (setrlimit(resource, &limit) != 0) die("set resource limit");
    }
}

// MARK: - Inside: the new root

static void bind_prepared(void) {
    char target[4096];
    for (int i = 0; i < prepared_count; i++) {
        snprintf(target, sizeof target, NEW_ROOT "%s", prepared[i].destination);
        if (prepared[i].is_file) {
            char parent[4096];
            snprintf(parent, sizeof parent, "%s", target);
            char *slash = strrchr(parent, '/');
            if (slash) { *slash = 0; if (make_directories(parent, 0755) != 0) die("create mount point"); }
            if (create_file(target, "", 0, 0644) != 0 && errno != EEXIST) die("create file mount point");
        } else if (make_directories(target, 0755) != 0) {
            die("create mount point");
        }
        if (sys_move_mount(prepared[i].fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) != 0) {
            status_line("error mount %s: %s", prepared[i].destination, strerror(errno));
            _exit(125);
        }
        close(prepared[i].fd);
    }
}

static void mount_device(const char *name) {
    char source[64], target[128];
    snprintf(source, sizeof source, "/dev/%s", name);
    snprintf(target, sizeof target, NEW_ROOT "/dev/%s", name);
    if (create_file(target, "", 0, 0666) != 0) die("create device node");
    if (mount(source, target, NULL, MS_BIND, NULL) != 0) die("bind device");
}

static void build_root(void) {
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("make mounts private");
    if (mount("tmpfs", NEW_ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m") != 0) die("mount root tmpfs");

    // /dev: a few nodes bound from the host, a private devpts, shm.
    if (make_directories(NEW_ROOT "/dev", 0755) != 0) die("create /dev");
    if (mount("tmpfs", NEW_ROOT "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k") != 0) die("mount /dev");
    const char *devices[] = {"null", "zero", "full", "random", "urandom", "tty"};
    for (size_t i = 0; i < sizeof devices / sizeof *devices; i++) mount_device(devices[i]);
    if (mkdir(NEW_ROOT "/dev/pts", 0755) != 0) die("create /dev/pts");
    if (mount("devpts", NEW_ROOT "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620") != 0)
        die("mount devpts");
    if (symlink("pts/ptmx", NEW_ROOT "/dev/ptmx") != 0) die("link /dev/ptmx");
    if (mkdir(NEW_ROOT "/dev/shm", 01777) != 0) die("create /dev/shm");
    if (mount("tmpfs", NEW_ROOT "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m") != 0) die("mount /dev/shm");
    const char *links[][2] = {{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}};
    for (size_t i = 0; i < sizeof links / sizeof *links; i++) {
        char path[128];
        snprintf(path, sizeof path, NEW_ROOT "/dev/%s", links[i][1]);
        if (symlink(links[i][0], path) != 0) die("link in /dev");
    }

    // /proc of the new pid namespace, showing processes only (no /proc/sys, kcore, keys...).
    if (mkdir(NEW_ROOT "/proc", 0555) != 0) die("create /proc");
    if (mount("proc", NEW_ROOT "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "subset=pid") != 0) die("mount /proc");

    if (mkdir(NEW_ROOT "/tmp", 01777) != 0) die("create /tmp");
    if (mount("tmpfs", NEW_ROOT "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") != 0) die("mount /tmp");
    if (make_directories(NEW_ROOT "/etc", 0755) != 0) die("create /etc");

    for (int i = 0; i < cfg.count; i++) {
        struct record *r = &cfg.items[i];
        char path[4096];
        if (r->tag == TAG_DIRECTORY) {
            snprintf(path, sizeof path, NEW_ROOT "%s", r->value);
            if (make_directories(path, 0755) != 0) die("create directory");
        } else if (r->tag == TAG_SYMLINK) {
            snprintf(path, sizeof path, NEW_ROOT "%s", second_field(r));
            if (symlink(r->value, path) != 0) die("create symlink");
        } else if (r->tag == TAG_FILE) {
            snprintf(path, sizeof path, NEW_ROOT "%s", r->value);
            const char *content = second_field(r);
            if (create_file(path, content, strlen(content), 0644) != 0) die("create file");
        }
    }
    bind_prepared();

    // Paths the host later runs on its own (repository hooks and config) stay read-only inside.
    for (int i = 0; i < cfg.count; i++) {
        struct record *r = &cfg.items[i];
        if (r->tag != TAG_READONLY_PATH) continue;
        char path[4096];
        snprintf(path, sizeof path, NEW_ROOT "%s", r->value);
        if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) != 0) die("protect path");
        if (mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0) die("protect path read-only");
    }

    if (chdir(NEW_ROOT) != 0) die("enter new root");
    if (sys_pivot_root(".", ".") != 0) die("pivot_root");
    if (umount2(".", MNT_DETACH) != 0) die("detach old root");
    if (chdir("/") != 0) die("enter /");
    // The root itself becomes read-only; /tmp, /dev/shm and the read-write binds stay writable.
    if (mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0) die("make root read-only");
}

static void bring_up_loopback(void) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("open socket for loopback");
    struct ifreq request;
    memset(&request, 0, sizeof request);
    strcpy(request.ifr_name, "lo");
    if (ioctl(fd, SIOCGIFFLAGS, &request) != 0) die("read loopback flags");
    request.ifr_flags |= IFF_UP;
    if (ioctl(fd, SIOCSIFFLAGS, &request) != 0) die("bring up loopback");
    close(fd);
}

// Writes everything; returns 0, or -1 when the descriptor fails.
static int write_all(int fd, const char *data, ssize_t length) {
    while (length > 0) {
        ssize_t n = write(fd, data, (size_t)length);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        data += n;
        length -= n;
    }
    return 0;
}

// MARK: - The egress forwarder: 127.0.0.1:PORT inside, relayed to the host proxy's Unix socket


// Copies both ways between two sockets until both directions are done.
static void relay_sockets(int a, int b) {
    char buffer[16384];
    int a_open = 1, b_open = 1;
    while (a_open || b_open) {
        struct pollfd fds[2] = {{a_open ? a : -1, POLLIN, 0}, {b_open ? b : -1, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        for (int i = 0; i < 2; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            int from = i == 0 ? a : b, to = i == 0 ? b : a;
            ssize_t n = read(from, buffer, sizeof buffer);
            if (n <= 0) {
                shutdown(to, SHUT_WR);
                if (i == 0) a_open = 0; else b_open = 0;
                continue;
            }
            if (write_all(to, buffer, n) != 0) return;
        }
    }
}

// Starts the forwarder: a child of init, as the sandbox user, that accepts on the sandbox's own loopback and
// gives each connection to a grandchild that relays it to the proxy socket. It dies with the sandbox.
static void start_egress_forwarder(void) {
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0) die("create the egress listener");
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(cfg.egress_port), .sin_addr = {htonl(INADDR_LOOPBACK)}};
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 64) != 0) die("listen on the egress port");
    pid_t forwarder = fork();
    if (forwarder < 0) die("start the egress forwarder");
    if (forwarder > 0) {
        close(listener);
        return;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    // The command runs as the same user: keep the forwarder out of its reach (no ptrace) and under the same
    // system-call filter, so it is never a way around the command's own restrictions.
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (cfg.seccomp.len > 0 && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &cfg.seccomp) != 0) _exit(1);
    int keep = listener;
    for (int fd = 0; fd < 1024; fd++) if (fd != keep) close(fd);
    int null_fd = open("/dev/null", O_RDWR);
    if (null_fd >= 0) { dup2(null_fd, 0); dup2(null_fd, 1); dup2(null_fd, 2); if (null_fd > 2) close(null_fd); }
    signal(SIGCHLD, SIG_IGN);  // Connection children reap themselves.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (;;) {
        int client = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (client < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            _exit(1);
        }
        pid_t worker = fork();
        if (worker == 0) {
            close(listener);
            int upstream = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            struct sockaddr_un target = {.sun_family = AF_UNIX};
            snprintf(target.sun_path, sizeof target.sun_path, "%s", cfg.egress_socket);
            if (upstream < 0 || connect(upstream, (struct sockaddr *)&target, sizeof target) != 0) {
                const char *answer = "HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\nhyperctl: the egress proxy is not there\n";
                (void)write_all(client, answer, (ssize_t)strlen(answer));
                _exit(1);
            }
            relay_sockets(client, upstream);
            _exit(0);
        }
        close(client);
    }
}

// Drops every capability set, locks in no_new_privs, and becomes the sandbox user.
static void drop_privileges(void) {
    if (setgroups(0, NULL) != 0 && errno != EPERM) die("clear groups");
    if (setresgid(cfg.inside_gid, cfg.inside_gid, cfg.inside_gid) != 0) die("set gid");
    // Root inside gains nothing from being uid 0, and the lock keeps it that way.
    if (prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP_LOCKED |
              SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED, 0, 0, 0) != 0)
        die("lock securebits");
    for (int cap = 0; cap <= 63; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) die("drop bounding capability");
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) die("clear ambient capabilities");
    if (setresuid(cfg.inside_uid, cfg.inside_uid, cfg.inside_uid) != 0) die("set uid");
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &header, data) != 0) die("drop capabilities");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("set no_new_privs");
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) die("set non-dumpable");
}

// MARK: - Inside: pid 1

// Gives the sandbox's terminal the host terminal's size, when the host side is a terminal.
static void copy_window_size(int master) {
    struct winsize size;
    if (ioctl(0, TIOCGWINSZ, &size) == 0 || ioctl(1, TIOCGWINSZ, &size) == 0) ioctl(master, TIOCSWINSZ, &size);
}

// Reaps every child, relays signals to the command and, with a terminal, bytes between the host streams
// and the terminal; returns the command's wait status once it has exited and its output is drained. When
// `lifeline_fd` (if not -1) hangs up, the command is killed.
static int relay_until_exit(pid_t command, int signal_fd, int master, int lifeline_fd) {
    int input_open = master >= 0 && cfg.forward_stdin;
    int status = 0, exited = 0;
    char buffer[16384];
    for (;;) {
        struct pollfd fds[4] = {{signal_fd, POLLIN, 0}, {master, POLLIN, 0}, {input_open ? 0 : -1, POLLIN, 0},
                                {exited ? -1 : lifeline_fd, POLLIN, 0}};
        int ready = poll(fds, 4, exited ? 50 : -1);
        if (ready < 0 && errno == EINTR) continue;
        if (ready == 0 && exited) break;  // The terminal has gone quiet after the command ended.
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo info;
            while (read(signal_fd, &info, sizeof info) == (ssize_t)sizeof info) {
                int number = (int)info.ssi_signo;
                if (number == SIGCHLD) continue;
                if (number == SIGWINCH && master >= 0) copy_window_size(master);
                else kill(command, number);
            }
            pid_t done;
            int child_status;
            while ((done = waitpid(-1, &child_status, WNOHANG)) > 0) {
                if (done == command) { status = child_status; exited = 1; }
            }
        }
        if (master >= 0 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = read(master, buffer, sizeof buffer);
            if (n > 0) write_all(1, buffer, n);
            else if (exited) break;  // EIO: every holder of the terminal has closed it.
            else master = -1;
        }
        if (input_open && (fds[2].revents & (POLLIN | POLLHUP))) {
            ssize_t n = read(0, buffer, sizeof buffer);
            if (n > 0) write_all(master, buffer, n);
            else { input_open = 0; char eof = 4; write_all(master, &eof, 1); }
        }
        if (fds[3].revents & (POLLIN | POLLHUP | POLLERR)) {
            kill(command, SIGKILL);
            lifeline_fd = -1;
        }
        if (exited && master < 0) break;
    }
    return status;
}

static void run_command_child(int exec_error_fd, const char *terminal) {
    // The command: its own session (no host terminal to inject into), default signals, fds 0-2 only.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);  // Dispositions are already default: nothing here installs handlers.
    setsid();
    if (terminal) {
        // A terminal of the sandbox's own devpts becomes the command's controlling terminal and its stdio.
        int slave = open(terminal, O_RDWR);
        if (slave < 0 || ioctl(slave, TIOCSCTTY, 0) != 0) {
            int saved = errno;
            ssize_t ignored = write(exec_error_fd, &saved, sizeof saved);
            (void)ignored;
            _exit(125);
        }
        dup2(slave, 0);
        dup2(slave, 1);
        dup2(slave, 2);
        if (slave > 2) close(slave);
    } else if (!cfg.forward_stdin) {
        int null_fd = open("/dev/null", O_RDONLY);
        if (null_fd >= 0) { dup2(null_fd, 0); if (null_fd != 0) close(null_fd); }
    }
    if (chdir(cfg.cwd) != 0) {
        int saved = -errno;  // Negative: reported here already.
        dprintf(2, "hyperctl: working directory %s: %s\n", cfg.cwd, strerror(-saved));
        ssize_t ignored = write(exec_error_fd, &saved, sizeof saved);
        (void)ignored;
        _exit(125);
    }
    if (cfg.seccomp.len > 0 && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &cfg.seccomp) != 0) {
        int saved = -errno;
        dprintf(2, "hyperctl: installing the seccomp filter failed: %s\n", strerror(-saved));
        ssize_t ignored = write(exec_error_fd, &saved, sizeof saved);
        (void)ignored;
        _exit(125);
    }
    int error = chyper_exec_program(cfg.argv, cfg.envp);
    ssize_t ignored = write(exec_error_fd, &error, sizeof error);
    (void)ignored;
    _exit(error == ENOENT ? 127 : 126);
}

// Starts the command (with a terminal of the sandbox's devpts for a tty), says on stderr why it could not be
// executed, relays until it ends and returns its wait status. Runs as the sandbox user, inside.
static int run_command(int lifeline_fd) {
    int master = -1;
    char terminal[64] = {0};
    if (cfg.tty) {
        master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0 || unlockpt(master) != 0 || ptsname_r(master, terminal, sizeof terminal) != 0) die("open a terminal");
        copy_window_size(master);
    }

    int exec_error[2];
    if (pipe2(exec_error, O_CLOEXEC) != 0) die("create exec pipe");
    // Signals meant for the command (SIGTERM, SIGINT...) arrive on a signalfd and are forwarded.
    sigset_t handled;
    sigfillset(&handled);
    sigprocmask(SIG_BLOCK, &handled, NULL);
    int signal_fd = signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
    if (signal_fd < 0) die("watch signals");
    pid_t command = fork();
    if (command < 0) die("fork the command");
    if (command == 0) {
        close(exec_error[0]);
        run_command_child(exec_error[1], cfg.tty ? terminal : NULL);  // Every other descriptor closes on exec.
    }
    close(exec_error[1]);
    int exec_errno = 0;
    ssize_t got = read(exec_error[0], &exec_errno, sizeof exec_errno);
    close(exec_error[0]);
    if (got == (ssize_t)sizeof exec_errno && exec_errno > 0) {
        if (exec_errno == ENOENT && !strchr(cfg.argv[0], '/')) dprintf(2, "hyperctl: %s: command not found\n", cfg.argv[0]);
        else dprintf(2, "hyperctl: %s: %s\n", cfg.argv[0], strerror(exec_errno));
    }
    return relay_until_exit(command, signal_fd, master, lifeline_fd);
}

// A session's init: runs no command and keeps the namespaces alive. On SIGTERM (or INT, HUP, QUIT) it sends
// SIGTERM to every process of the sandbox and ends once none is left; the supervisor kills the sandbox if
// that takes longer than its grace period.
__attribute__((noreturn)) static void keep_session(int result_fd) {
    sigset_t handled;
    sigfillset(&handled);
    sigprocmask(SIG_BLOCK, &handled, NULL);
    int signal_fd = signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
    if (signal_fd < 0) die("watch signals");
    dprintf(result_fd, "started %llu\n", (unsigned long long)monotonic_ns());
    int stopping = 0;
    for (;;) {
        struct pollfd fds = {signal_fd, POLLIN, 0};
        int ready = poll(&fds, 1, stopping ? 20 : -1);
        if (ready < 0 && errno != EINTR) break;
        struct signalfd_siginfo info;
        while (read(signal_fd, &info, sizeof info) == (ssize_t)sizeof info) {
            int number = (int)info.ssi_signo;
            if (!stopping && (number == SIGTERM || number == SIGINT || number == SIGHUP || number == SIGQUIT)) {
                stopping = 1;
                kill(-1, SIGTERM);
            }
        }
        while (waitpid(-1, NULL, WNOHANG) > 0) {}
        // kill(-1, 0) reaches every other process of the pid namespace: ESRCH means none is left.
        if (stopping && kill(-1, 0) != 0 && errno == ESRCH) break;
    }
    dprintf(result_fd, "status 0\n");
    _exit(0);
}

static void run_init(int go_fd, int result_fd, int helper_alive_fd) {
    // Errors from here on travel through the helper, so its exit alone ends the host's status stream.
    if (dup3(result_fd, STATUS_FD, O_CLOEXEC) < 0) _exit(125);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) die("set parent-death signal");
    struct pollfd check = {helper_alive_fd, POLLIN, 0};
    if (poll(&check, 1, 0) > 0) _exit(125);  // The helper is already gone.
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) die("set non-dumpable");
    char byte;
    if (read(go_fd, &byte, 1) != 1) _exit(125);  // Wait for the id maps, idmapped binds and cgroups.
    close(go_fd);
    if (host_root && (setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0)) die("become the namespace's root");
    if (unshare(CLONE_NEWCGROUP) != 0) die("create the cgroup namespace");  // Rooted at the sandbox's cgroup.
    build_root();
    bring_up_loopback();
    const char *hostname = cfg.hostname ? cfg.hostname : "sandbox";
    if (sethostname(hostname, strlen(hostname)) != 0) die("set hostname");
    apply_rlimits();
    drop_privileges();
    if (cfg.egress_socket) {
        if (cfg.egress_port == 0) die_message("an egress socket without a port");
        start_egress_forwarder();
    }

    if (cfg.session) keep_session(result_fd);
    dprintf(result_fd, "started %llu\n", (unsigned long long)monotonic_ns());
    int status = run_command(helper_alive_fd);
    dprintf(result_fd, "status %d\n", status);
    _exit(0);
}

// MARK: - Join mode: one command in a running session sandbox

// Enters the sandbox of init `cfg.join_pid` (its cgroups, then all its namespaces at once through a pidfd),
// becomes the sandbox user with the sandbox's limits and filter, and runs the command there. Reports
// "started", then "exited CODE" or "signaled N"; hyperctl closing the lifeline kills the command.
static int join_main(void) {
    int init_fd = sys_pidfd_open(cfg.join_pid);
    if (init_fd < 0) die("find the sandbox");
    join_cgroups(getpid());
    if (setns(init_fd, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP) != 0)
        die("enter the sandbox's namespaces");
    close(init_fd);
    if (host_root && (setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0)) die("become the namespace's root");
    apply_rlimits();
    drop_privileges();
    status_line("started %llu", (unsigned long long)monotonic_ns());
    int status = run_command(LIFELINE_FD);
    if (WIFEXITED(status)) status_line("exited %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status)) status_line("signaled %d", WTERMSIG(status));
    return 0;
}

// MARK: - Helper main: supervision on the host side

static int helper_main(void) {
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) die("set non-dumpable");
    // Nothing but the three standard streams and our three pipes survives into the sandbox tree.
    if (syscall(SYS_close_range, 6, ~0U, 0) != 0) die("close inherited descriptors");
    read_config();
    fcntl(STATUS_FD, F_SETFD, FD_CLOEXEC);
    fcntl(LIFELINE_FD, F_SETFD, FD_CLOEXEC);
    host_root = geteuid() == 0;
    if (host_root && setgroups(0, NULL) != 0) die("clear supplementary groups");
    if (cfg.join_pid > 0) return join_main();

    prepare_binds();

    // Signals for the command (a terminal's ^C, `hyperctl` forwarding one) reach the helper; it relays them
    // to the sandbox's init, which relays them to the command.
    sigset_t relayed;
    sigemptyset(&relayed);
    int relayed_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT, SIGTSTP};
    for (size_t i = 0; i < sizeof relayed_signals / sizeof *relayed_signals; i++) sigaddset(&relayed, relayed_signals[i]);
    sigprocmask(SIG_BLOCK, &relayed, NULL);
    int signal_fd = signalfd(-1, &relayed, SFD_CLOEXEC);
    if (signal_fd < 0) die("watch signals");

    int go[2], result[2], alive[2];
    if (pipe2(go, O_CLOEXEC) != 0 || pipe2(result, O_CLOEXEC) != 0 || pipe2(alive, O_CLOEXEC) != 0) die("create pipes");
    // One clone creates the sandbox's init directly in its new user, mount, pid, net, ipc and uts namespaces.
    long flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD;
    pid_t init = (pid_t)syscall(SYS_clone, flags, NULL, NULL, NULL, 0);
    if (init < 0) die("create the sandbox's namespaces");
    if (init == 0) {
        close(go[1]);
        close(result[0]);
        close(alive[1]);
        close(LIFELINE_FD);
        close(signal_fd);
        run_init(go[0], result[1], alive[0]);
    }
    close(go[0]);
    close(result[1]);
    close(alive[0]);
    int userns_fd = map_user_namespace(init);
    apply_idmaps(userns_fd);
    close(userns_fd);
    for (int i = 0; i < prepared_count; i++) close(prepared[i].fd);
    int init_fd = sys_pidfd_open(init);
    if (init_fd < 0) { kill(init, SIGKILL); die("watch the sandbox"); }
    join_cgroups(init);
    char byte = 1;
    if (write(go[1], &byte, 1) != 1) die("start the sandbox");
    close(go[1]);
    status_line("created %llu", (unsigned long long)monotonic_ns());
    if (cfg.session) status_line("init %d", init);

    uint64_t deadline = cfg.timeout_ms > 0 ? monotonic_ns() + (uint64_t)cfg.timeout_ms * 1000000ull : 0;
    char buffer[256];
    size_t buffered = 0;
    int reported = 0, timed_out = 0;
    for (;;) {
        struct pollfd fds[4] = {{result[0], POLLIN, 0}, {init_fd, POLLIN, 0}, {signal_fd, POLLIN, 0}, {LIFELINE_FD, POLLIN, 0}};
        int wait_ms = -1;
        if (deadline) {
            uint64_t now = monotonic_ns();
            wait_ms = now >= deadline ? 0 : (int)((deadline - now) / 1000000ull) + 1;
        }
        int ready = poll(fds, 4, wait_ms);
        if (ready < 0 && errno == EINTR) continue;
        if (deadline && monotonic_ns() >= deadline && !reported) {
            timed_out = 1;
            kill_cgroups();
            kill(init, SIGKILL);
            break;
        }
        if (fds[2].revents & POLLIN) {
            struct signalfd_siginfo info;
            if (read(signal_fd, &info, sizeof info) == (ssize_t)sizeof info) kill(init, (int)info.ssi_signo);
        }
        if (fds[3].revents & (POLLIN | POLLHUP)) {
            // hyperctl is gone: take the sandbox with it.
            kill_cgroups();
            kill(init, SIGKILL);
            break;
        }
        if (fds[0].revents & (POLLIN | POLLHUP)) {
            ssize_t got = read(result[0], buffer + buffered, sizeof buffer - 1 - buffered);
            if (got > 0) {
                buffered += (size_t)got;
                buffer[buffered] = 0;
                char *newline;
                while ((newline = strchr(buffer, '\n'))) {
                    *newline = 0;
                    int status;
                    if (strncmp(buffer, "started ", 8) == 0) {
                        status_line("%s", buffer);
                    } else if (sscanf(buffer, "status %d", &status) == 1) {
                        if (WIFEXITED(status)) status_line("exited %d", WEXITSTATUS(status));
                        else if (WIFSIGNALED(status)) status_line("signaled %d", WTERMSIG(status));
                        reported = 1;
                    } else if (strncmp(buffer, "error ", 6) == 0) {
                        status_line("%s", buffer);
                        reported = 1;
                    }
                    size_t consumed = (size_t)(newline - buffer) + 1;
                    memmove(buffer, newline + 1, buffered - consumed + 1);
                    buffered -= consumed;
                }
            } else if (got == 0) {
                fds[0].fd = -1;
                close(result[0]);
                result[0] = -1;
            }
        }
        if (reported || (fds[1].revents & POLLIN)) break;  // The command's status is in, or init ended.
    }
    // Collect a status line that raced with init's exit.
    while (!reported && !timed_out && result[0] >= 0) {
        struct pollfd last = {result[0], POLLIN, 0};
        if (poll(&last, 1, 100) <= 0) break;
        ssize_t got = read(result[0], buffer + buffered, sizeof buffer - 1 - buffered);
        if (got <= 0) break;
        buffered += (size_t)got;
        buffer[buffered] = 0;
        char *line = strstr(buffer, "status ");
        int status;
        if (line && strchr(line, '\n') && sscanf(line, "status %d", &status) == 1) {
            if (WIFEXITED(status)) status_line("exited %d", WEXITSTATUS(status));
            else if (WIFSIGNALED(status)) status_line("signaled %d", WTERMSIG(status));
            reported = 1;
        }
    }
    kill_cgroups();
    kill(init, SIGKILL);
    // Without cgroups to remove there is nothing to wait for: the sandbox's init has exited or been killed,
    // and the kernel ends the rest of its pid namespace.
    if (has_removable_cgroups()) {
        int init_status = 0;
        while (waitpid(init, &init_status, 0) < 0 && errno == EINTR) {}
        remove_cgroups();
    }
    if (timed_out) status_line("timeout");
    else if (!reported) status_line("error the sandbox ended before reporting the command's status");
    return 0;
}

// Runs before main() (and before the Swift runtime) in the re-executed binary; glibc passes argc/argv here.
__attribute__((constructor)) static void hyper_jail_entry(int argc, char **argv, char **envp) {
    (void)envp;
    if (argc == 2 && strcmp(argv[0], "hyper-jail") == 0 && strcmp(argv[1], HYPER_JAIL_MARKER) == 0) {
        _exit(helper_main());
    }
}

int chyper_jail_linked(void) { return 1; }

// Returns the number of threads of this process, from /proc/self/stat (field 20), or -1.
static int thread_count(void) {
    char text[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t length = read(fd, text, sizeof text - 1);
    close(fd);
    if (length <= 0) return -1;
    text[length] = 0;
    char *field = strrchr(text, ')');  // The command name may hold spaces; fields start after it.
    if (!field) return -1;
    int index = 2;
    for (char *p = field + 1; *p; p++) {
        if (*p != ' ') continue;
        index++;
        if (index == 20) return atoi(p + 1);
    }
    return -1;
}

pid_t chyper_jail_fork(const int descriptors[], int count) {
    if (count < 6 || count > 16 || thread_count() != 1) { errno = EBUSY; return -1; }
    pid_t pid = fork();
    if (pid != 0) return pid;
    // The child: exactly the given descriptors at 0..count-1, default signals, empty environment.
    int lifted[16];
    for (int i = 0; i < count; i++) {
        lifted[i] = fcntl(descriptors[i], F_DUPFD_CLOEXEC, 100);
        if (lifted[i] < 0) _exit(125);
    }
    for (int i = 0; i < count; i++) {
        if (dup2(lifted[i], i) < 0) _exit(125);
    }
    // Nothing else of the parent survives: its copy of the configuration pipe's write end, above all, would
    // keep the helper waiting for the end of its configuration.
    if (syscall(SYS_close_range, count, ~0U, 0) != 0) _exit(125);
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    clearenv();
    _exit(helper_main());
}
