// CHyperHost: host calls Swift cannot express: passing descriptors on Unix sockets (SCM_RIGHTS), reading
// the peer's credentials (SO_PEERCRED), and the signalfd that relays hyperctl's signals to a sandbox.
// Nothing here holds state.
#ifndef CHYPER_HOST_H
#define CHYPER_HOST_H

#include <spawn.h>
#include <stddef.h>
#include <sys/types.h>

/// The most descriptors one message carries.
#define CHYPER_MAX_PASSED_DESCRIPTORS 8

/// Sends `length` bytes with `count` descriptors attached (at most CHYPER_MAX_PASSED_DESCRIPTORS), never
/// raising SIGPIPE. Returns the bytes sent, or -1 with errno.
ssize_t chyper_send_with_descriptors(int fd, const void *data, size_t length, const int *descriptors, int count);

/// Receives up to `capacity` bytes and any descriptors that came with them (closed on exec), at most `max`
/// (extra ones are closed). Returns the bytes received (0 at end of stream), or -1 with errno; `*count` is
/// the number of descriptors stored.
ssize_t chyper_receive_with_descriptors(int fd, void *buffer, size_t capacity, int *descriptors, int max, int *count);

/// The connected peer's user id and process id. Returns 0, or -1 with errno.
int chyper_peer_credentials(int fd, unsigned *uid, int *pid);

/// Adds "close every descriptor from `lowest` up" to spawn file actions (after the dup2 actions), so that a
/// spawned process inherits only the descriptors it is given. Returns 0, or an error number.
int chyper_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest);

/// Blocks the signals hyperctl relays to a sandboxed command (INT, TERM, HUP, QUIT, USR1, USR2, WINCH,
/// CONT, TSTP) in the calling thread and returns a non-blocking signalfd for them, or -1 with errno.
int chyper_relay_signal_fd(void);

/// The next relayed signal's number, or 0 when none is pending.
int chyper_next_relayed_signal(int fd);

#endif
