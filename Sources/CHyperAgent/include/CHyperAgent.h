// The guest agent's system calls that have no usable Swift import: module loading, spawning a command
// between fork and exec, terminals, the loopback listener for the egress proxy, and powering the guest off.
#ifndef CHYPER_AGENT_H
#define CHYPER_AGENT_H

#include <stddef.h>
#include <sys/types.h>

/// Loads a kernel module file (finit_module). Returns 0, or -1 with errno.
int chyper_agent_load_module(const char *path);

/// Starts `argv` in a new session with `envp`, in `directory`, on the given descriptors (or, when
/// `terminal` is not NULL, on that terminal as its controlling terminal). The child joins the cgroup whose
/// `cgroup.procs` path is given, when not NULL, before it executes anything. The program is searched in the
/// PATH of `envp`. Returns the pid; `*exec_error` is 0 when the program started, else its errno (the child
/// then exits 127 for ENOENT, 126 otherwise, after saying why on its stderr).
pid_t chyper_agent_spawn(char *const argv[], char *const envp[], const char *directory, int input, int output,
                         int error, const char *terminal, const char *cgroup_procs, int *exec_error);

/// Opens a new pseudo-terminal; writes the replica's path into `name`. Returns the controller descriptor.
int chyper_agent_open_terminal(char *name, size_t capacity, unsigned short rows, unsigned short columns);

/// Sets a terminal's window size.
int chyper_agent_set_window(int fd, unsigned short rows, unsigned short columns);

/// Puts a terminal (the control channel) into raw mode.
int chyper_agent_make_raw(int fd);

/// Blocks SIGCHLD and returns a non-blocking signalfd for it.
int chyper_agent_child_signal_fd(void);

/// Empties a signalfd.
void chyper_agent_drain(int fd);

/// Flushes file systems and resets the machine (through the i8042, with `reboot=k`). Does not return.
__attribute__((noreturn)) void chyper_agent_power_off(void);

/// Creates a pipe whose ends close on exec. Returns 0, or -1 with errno.
int chyper_agent_pipe(int fds[2]);

/// Brings the loopback interface up and listens on 127.0.0.1:`port` (non-blocking, closed on exec).
/// Returns the listener, or -1 with errno.
int chyper_agent_loopback_listen(unsigned short port);

/// Accepts a connection, non-blocking and closed on exec. Returns it, or -1 with errno.
int chyper_agent_accept(int listener);

/// Sets the hostname, adds `length` bytes of `seed` to the kernel's entropy pool (credited) and reseeds
/// its random generator (RNDRESEEDCRNG), so that output differs from any other guest's from then on.
/// Returns 0, or -1 with errno.
int chyper_agent_set_identity(const char *hostname, const void *seed, size_t length);

/// Brings the loopback interface up. Returns 0, or -1 with errno.
int chyper_agent_loopback_up(void);
/// Makes `new_root` (a mount point) the root of PID 1, as switch_root does. Returns 0, or -1 with errno.
int chyper_agent_switch_root(const char *new_root);
/// Connects to a Unix stream socket; the descriptor is non-blocking and closed on exec. Returns it, or -1
/// with errno (ENOENT or ECONNREFUSED while nobody listens there).
int chyper_agent_unix_connect(const char *path);
#endif
