// Spawn file actions Swift cannot name (see CHyperHost.h).
#define _GNU_SOURCE
#include "CHyperHost.h"

#include <spawn.h>

int chyper_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest) {
    return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
}
