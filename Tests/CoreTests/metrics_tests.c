/*
 * metrics_tests.c: GET /metrics against counters.h's table. Every COUNTER row renders as its
 * own sample with its own value, every family opens once with HELP and TYPE, and every
 * sample follows its family's header. (A counter added to struct rl_counters without a row
 * fails to compile: the size assertion in metrics.c.) Built with ASan and UBSan by `make test-c`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core_types.h"
#include "metrics.h"

#include "check.h"

static rl_core *new_core(void) {
    rl_core_config cfg;
    char err[256];
    rl_core_config_defaults(&cfg);
    cfg.capacity = 8;
    rl_core *core = rl_core_new(&cfg, err, sizeof err);
    CHECK(core != NULL);
    return core;
}

/* The scrape's body as a NUL-terminated string (the caller frees it). */
static char *scrape(rl_core *core) {
    struct evbuffer *b = evbuffer_new();
    rl_metrics_render(core, b);
    size_t n = evbuffer_get_length(b);
    char *text = malloc(n + 1);
    evbuffer_remove(b, text, n);
    text[n] = 0;
    evbuffer_free(b);
    return text;
}

static int occurrences(const char *text, const char *needle) {
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

typedef struct row {
    const char *field, *type, *name, *labels, *help;
    size_t offset;
} row;

static const row rows[] = {
#define ROW(field, type, name, labels, help) {#field, #type, name, labels, help, offsetof(struct rl_counters, field)},
#define SKIP(render)
    RL_METRICS(ROW, SKIP)
#undef ROW
#undef SKIP
};
#define N_ROWS (sizeof rows / sizeof rows[0])

/* Each counter shows its own value: a distinct one per row, so that a row reading another's
 * field shows up. */
static void test_every_counter_is_a_sample(void) {
    rl_core *core = new_core();
    for (size_t i = 0; i < N_ROWS; i++) CTR_ADD(*(rl_counter *)((char *)&core->ctr + rows[i].offset), 7000 + i);
    char *text = scrape(core), line[512];
    for (size_t i = 0; i < N_ROWS; i++) {
        snprintf(line, sizeof line, "\n%s%s %zu\n", rows[i].name, rows[i].labels, 7000 + i);
        int found = occurrences(text, line);
        CHECK(found == 1);
        if (found != 1) fprintf(stderr, "  %s: no line \"%s%s %zu\"\n", rows[i].field, rows[i].name, rows[i].labels, 7000 + i);
    }
    free(text);
    rl_core_free(core);
}

/* The first row of a family says HELP; the rows after it add labels only (same type, no
 * help of their own), and a family's rows are next to each other. */
static void test_families_open_once(void) {
    rl_core *core = new_core();
    char *text = scrape(core), header[1024];
    for (size_t i = 0; i < N_ROWS; i++) {
        int opens = i == 0 || strcmp(rows[i - 1].name, rows[i].name) != 0;
        if (opens) {
            CHECK(rows[i].help[0] != 0);
            snprintf(header, sizeof header, "# HELP %s %s\n# TYPE %s %s\n", rows[i].name, rows[i].help, rows[i].name,
                     rows[i].type);
            CHECK(occurrences(text, header) == 1);
            for (size_t j = 0; j + 1 < i; j++) CHECK(strcmp(rows[j].name, rows[i].name) != 0);
        } else {
            CHECK(rows[i].help[0] == 0 && strcmp(rows[i].type, rows[i - 1].type) == 0);
        }
    }
    free(text);
    rl_core_free(core);
}

/* The whole text, BY_HAND families and process_* included: each family is declared once and
 * every sample belongs to the family declared last (name, or name_bucket/_sum/_count). */
static void test_samples_follow_their_family(void) {
    rl_core *core = new_core();
    char *text = scrape(core), family[128] = "", seen[8192] = " ", name[128];
    int samples = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (sscanf(line, "# TYPE %127s", name) == 1) {
            char key[132];
            snprintf(key, sizeof key, " %s ", name);
            CHECK(strstr(seen, key) == NULL);
            strncat(seen, key + 1, sizeof seen - strlen(seen) - 1);
            snprintf(family, sizeof family, "%s", name);
            continue;
        }
        if (line[0] == '#') continue;
        size_t n = strcspn(line, "{ "), f = strlen(family);
        char suffix[32] = "";
        if (n > f && n - f < sizeof suffix) memcpy(suffix, line + f, n - f);
        int ok = n >= f && strncmp(line, family, f) == 0 &&
                 (n == f || strcmp(suffix, "_bucket") == 0 || strcmp(suffix, "_sum") == 0 || strcmp(suffix, "_count") == 0);
        CHECK(ok);
        if (!ok) fprintf(stderr, "  \"%s\" is not in family %s\n", line, family);
        samples++;
    }
    CHECK(samples > (int)N_ROWS);
    free(text);
    rl_core_free(core);
}

int main(void) {
    test_every_counter_is_a_sample();
    test_families_open_once();
    test_samples_follow_their_family();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
