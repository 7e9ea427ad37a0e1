/* check.h: the C unit tests' one assertion, counted (each test program includes it once). */
#ifndef RL_CHECK_H
#define RL_CHECK_H

#include <stdio.h>

static int passed, failed;
#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (cond) passed++;                                                         \
        else {                                                                      \
            failed++;                                                               \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);         \
        }                                                                           \
    } while (0)

#endif
