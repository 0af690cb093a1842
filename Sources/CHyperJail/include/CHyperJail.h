// CHyperJail: the process backend's pre-exec helper, linked into every binary that uses HyperProcess.
// See jail.c: a binary re-executed with argv {"hyper-jail", HYPER_JAIL_MARKER} becomes the helper.
#ifndef CHYPERJAIL_H
#define CHYPERJAIL_H

/// The argument that selects helper mode; a version in it keeps mismatched builds apart.
#define HYPER_JAIL_MARKER "--hyperctl-jail-helper-v1"

/// Returns the helper-mode marker, for Swift.
static inline const char *chyper_jail_marker(void) { return HYPER_JAIL_MARKER; }

/// Links the helper's object file into the binary (the constructor lives there); returns 1.
int chyper_jail_linked(void);

#include <sys/types.h>

/// Starts the helper by forking this process, with `descriptors` moved to 0..count-1, but only while the
/// process has a single thread: after fork in a threaded process only async-signal-safe calls are allowed.
/// Returns the child's pid, or -1 with errno EBUSY when other threads exist (re-execute instead).
pid_t chyper_jail_fork(const int descriptors[], int count);

#endif
