/* tally.c: the tallies behind the abuse limits (see tally.h). */
#include <stdlib.h>
#include <string.h>
#include "tally.h"
#include "hash.h"
#include "relay_core.h"

int rl_tally_init(rl_tally *t, uint32_t buckets_log2, uint32_t window_s) {
    memset(t, 0, sizeof *t);
    t->mask = (1u << buckets_log2) - 1;
    t->window_s = window_s ? window_s : 1;
    t->buckets = calloc((size_t)t->mask + 1, sizeof *t->buckets);
    if (!t->buckets || rl_random_bytes((uint8_t *)&t->seed, sizeof t->seed) != 0) return -1;
    return 0;
}

void rl_tally_free(rl_tally *t) {
    if (!t->buckets) return;
    for (uint32_t b = 0; b <= t->mask; b++) {
        rl_tally_entry *e = t->buckets[b];
        while (e) {
            rl_tally_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = NULL;
}

static uint32_t bucket(const rl_tally *t, const uint8_t key[16]) {
    return (uint32_t)rl_hash64(t->seed, key, 16) & t->mask;
}

rl_tally_entry *rl_tally_get(rl_tally *t, const uint8_t key[16], uint32_t now_s) {
    uint32_t b = bucket(t, key);
    rl_tally_entry *e = t->buckets[b];
    while (e && memcmp(e->key, key, 16) != 0) e = e->next;
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) return NULL;
        memcpy(e->key, key, 16);
        e->window_start = now_s;
        e->next = t->buckets[b];
        t->buckets[b] = e;
        t->count++;
    } else if (now_s - e->window_start >= t->window_s) {
        e->window_start = now_s;
        e->window_events = 0;
    }
    return e;
}

void rl_tally_sweep(rl_tally *t, uint32_t now_s) {
    for (uint32_t b = 0; b <= t->mask; b++) {
        rl_tally_entry **link = &t->buckets[b];
        while (*link) {
            rl_tally_entry *e = *link;
            if (e->open == 0 && now_s - e->window_start >= t->window_s) {
                *link = e->next;
                free(e);
                t->count--;
            } else {
                link = &e->next;
            }
        }
    }
}
