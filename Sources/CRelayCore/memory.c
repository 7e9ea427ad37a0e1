/* memory.c: returning freed heap memory to the system. */
#include <malloc.h>
#include "relay_core.h"

void rl_release_free_memory(void) {
    malloc_trim(0);
}
