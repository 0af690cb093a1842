// Executing a sandboxed command's program the way both sandboxes do: a path as given, or a search of the
// PATH in the command's own environment (the standard directories when it has none).
#ifndef CHYPER_EXEC_H
#define CHYPER_EXEC_H

/// Replaces the process with `argv[0]`. Returns only on failure, with the errno to report: ENOENT when no
/// candidate exists (exit 127), else the access error of the last candidate that exists (exit 126).
/// Safe between fork and exec: it allocates nothing.
int chyper_exec_program(char *const argv[], char *const envp[]);

#endif
