// The program lookup shared by the process backend's helper and the guest agent.
#include "CHyperExec.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

int chyper_exec_program(char *const argv[], char *const envp[]) {
    const char *program = argv[0];
    if (strchr(program, '/')) {
        execve(program, argv, envp);
        return errno;
    }
    const char *search = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (char *const *entry = envp; *entry; entry++) if (strncmp(*entry, "PATH=", 5) == 0) search = *entry + 5;
    int error = ENOENT;
    const char *start = search;
    while (*start) {
        const char *end = strchr(start, ':');
        size_t length = end ? (size_t)(end - start) : strlen(start);
        char candidate[4096];
        if (length > 0 && length + strlen(program) + 2 < sizeof candidate) {
            memcpy(candidate, start, length);
            candidate[length] = '/';
            strcpy(candidate + length + 1, program);
            execve(candidate, argv, envp);
            if (errno == EACCES || errno == ENOEXEC || errno == EPERM) error = errno;
        }
        if (!end) break;
        start = end + 1;
    }
    return error;
}
