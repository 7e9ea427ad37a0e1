/*
 * relay-agent: the device agent as a program of its own, for devices (cameras, TVs,
 * gateways) that cannot carry the Swift binary. The same agent.c as `relay agent`, the same
 * flags, RELAY_AGENT_* variables and config file keys (Sources/relay/AgentCommand.swift,
 * Sources/RelayControl/AgentOptions+Layers.swift), the same exit status 64 for a setting
 * that cannot work. Depends on libc, libevent_core and OpenSSL only.
 *
 * Runs in the foreground (procd, systemd, runit supervise it). Logs to stderr, or syslog
 * with --syslog. SIGHUP re-reads the config file (and the key file) and restarts the agent
 * with it; a config that does not work is logged and the running agent kept. SIGTERM and
 * SIGINT tell the relay the device is leaving (LEAVE), then exit 0.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include "relay_agent.h"

#ifndef RELAY_AGENT_VERSION
#define RELAY_AGENT_VERSION "dev"
#endif
#define EX_CONFIG 64 /* ArgumentParser's validation failure, as `relay agent` */

/* The settings, by config key (= long flag without "--"), in the order `relay agent` has. */
enum { K_RELAY, K_ID, K_KEY, K_KEY_FILE, K_FORWARD, K_LOG_LEVEL, K_CA, K_TLS_NAME, K_TLS_CERT, K_TLS_KEY, K_N };
static const char *const keys[K_N] = {"relay", "id", "key", "key-file", "forward", "log-level",
                                      "ca", "tls-name", "tls-cert", "tls-key"};

typedef struct {
    char *value[K_N];
    char *origin[K_N]; /* NULL: the flag; else the variable's name or the file's path */
} layer;

typedef struct {
    char *v[K_N];
    const char *origin[K_N];
    uint8_t secret[RL_SECRET_LEN];
    int level; /* swift-log order: 0 trace .. 6 critical */
} settings;

static layer flags;
static const char *config_path;
static int use_syslog;
static int threshold = 2; /* info */

static const char *const level_names[] = {"trace", "debug", "info", "notice", "warning", "error", "critical"};
static const int level_prio[] = {LOG_DEBUG, LOG_DEBUG, LOG_INFO, LOG_NOTICE, LOG_WARNING, LOG_ERR, LOG_CRIT};

/* ---- logging ---- */

static void emit(int level, const char *event, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void emit(int level, const char *event, const char *fmt, ...) {
    if (level < threshold) return;
    char text[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    for (char *p = text; *p; p++)
        if ((unsigned char)*p < 0x20) *p = ' '; /* one line per event */
    if (use_syslog) {
        syslog(level_prio[level], "%s %s", event, text);
        return;
    }
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S%z", localtime_r(&now, &tm));
    fprintf(stderr, "%s %s relay.agent : %s %s\n", ts, level_names[level], text, event);
}

/* The agent's levels (RL_LOG_*) onto swift-log's, as AgentHandle.swift maps them. */
static void on_log(void *ctx, int level, const char *event, const char *text) {
    static const int map[] = {1, 2, 3, 4, 5};
    emit(level >= 0 && level <= 4 ? map[level] : 5, event, "what=%s", text);
}

static void fail_config(const char *flag, const char *origin, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail_config(const char *flag, const char *origin, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (origin) fprintf(stderr, "Error: %s (from %s): %s\n", flag + 2, origin, msg);
    else fprintf(stderr, "Error: %s: %s\n", flag, msg);
}

/* ---- the config file: the flat YAML subset agent.yaml uses ---- */

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n')) *--e = 0;
    return s;
}

/* A scalar: "double quoted" (\\ \" \n \t escapes), 'single quoted' ('' is '), or plain (a
 * " #" starts a comment). NULL when malformed. */
static char *scalar(char *v) {
    v = trim(v);
    if (*v == '"') {
        char *out = v, *p = v + 1;
        for (; *p && *p != '"'; p++) {
            if (*p == '\\' && p[1]) {
                p++;
                *out++ = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
            } else {
                *out++ = *p;
            }
        }
        if (*p != '"') return NULL;
        char *rest = trim(p + 1);
        if (*rest && *rest != '#') return NULL;
        *out = 0;
        return v;
    }
    if (*v == '\'') {
        char *out = v, *p = v + 1;
        for (; *p; p++) {
            if (*p == '\'') {
                if (p[1] != '\'') break;
                p++;
            }
            *out++ = *p;
        }
        if (*p != '\'') return NULL;
        char *rest = trim(p + 1);
        if (*rest && *rest != '#') return NULL;
        *out = 0;
        return v;
    }
    for (char *p = v; *p; p++)
        if (*p == '#' && (p == v || p[-1] == ' ' || p[-1] == '\t')) {
            *p = 0;
            break;
        }
    return trim(v);
}

static int key_index(const char *k) {
    for (int i = 0; i < K_N; i++)
        if (strcmp(k, keys[i]) == 0) return i;
    return -1;
}

static int load_file(const char *path, layer *out) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fail_config("--config", NULL, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        n++;
        char *s = trim(line);
        if (!*s || *s == '#' || strcmp(s, "---") == 0) continue;
        if (line[0] == ' ' || line[0] == '\t') {
            fail_config("--config", NULL, "%s line %d: only top-level `key: value` lines are settings", path, n);
            fclose(f);
            return -1;
        }
        char *colon = strchr(s, ':');
        if (!colon) {
            fail_config("--config", NULL, "%s line %d: not a `key: value` line", path, n);
            fclose(f);
            return -1;
        }
        *colon = 0;
        char *k = trim(s);
        int i = key_index(k);
        if (i < 0) {
            char known[256] = "";
            for (int j = 0; j < K_N; j++) {
                strcat(known, keys[j]);
                if (j + 1 < K_N) strcat(known, ", ");
            }
            char flag[80];
            snprintf(flag, sizeof flag, "--%.64s", k);
            fail_config(flag, path, "unknown key (known keys: %s)", known);
            fclose(f);
            return -1;
        }
        char *v = scalar(colon + 1);
        if (!v) {
            fail_config("--config", NULL, "%s line %d: a quoted value that does not end", path, n);
            fclose(f);
            return -1;
        }
        if (!*v || strcmp(v, "~") == 0 || strcmp(v, "null") == 0) continue; /* unset */
        free(out->value[i]);
        free(out->origin[i]);
        out->value[i] = strdup(v);
        out->origin[i] = strdup(path);
    }
    fclose(f);
    return 0;
}

static void layer_clear(layer *l) {
    for (int i = 0; i < K_N; i++) {
        free(l->value[i]);
        free(l->origin[i]);
        l->value[i] = l->origin[i] = NULL;
    }
}

/* ---- resolution: flags, then RELAY_AGENT_*, then the file ---- */

static int require_private(const char *path, const char *flag, const char *origin) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fail_config(flag, origin, "cannot read %s", path);
        return -1;
    }
    if (st.st_mode & 077) {
        fail_config(flag, origin, "%s can be read by others (mode %o) and holds the secret; chmod 600 it", path,
                    (unsigned)(st.st_mode & 0777));
        return -1;
    }
    return 0;
}

static char *read_key_file(const char *path, const char *origin) {
    if (require_private(path, "--key-file", origin) != 0) return NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        fail_config("--key-file", origin, "cannot read %s", path);
        return NULL;
    }
    char line[512] = "";
    if (!fgets(line, sizeof line, f)) line[0] = 0;
    fclose(f);
    line[strcspn(line, "\r\n")] = 0;
    return strdup(line);
}

static void settings_clear(settings *s) {
    for (int i = 0; i < K_N; i++) free(s->v[i]);
    memset(s, 0, sizeof *s);
}

static int resolve(settings *s) {
    memset(s, 0, sizeof *s);
    layer file = {0}, env = {0};
    int rc = -1;
    if (config_path && load_file(config_path, &file) != 0) goto out;
    for (int i = 0; i < K_N; i++) {
        char name[64] = "RELAY_AGENT_";
        size_t n = strlen(name);
        for (const char *p = keys[i]; *p && n < sizeof name - 1; p++) name[n++] = *p == '-' ? '_' : (char)(*p & ~0x20);
        name[n] = 0;
        const char *v = getenv(name);
        if (v) {
            env.value[i] = strdup(v);
            env.origin[i] = strdup(name);
        }
    }
    /* Flags first; then the variable or the file. */
    const char *from[K_N];
    for (int i = 0; i < K_N; i++) {
        const char *v = flags.value[i];
        from[i] = NULL;
        if (!v && env.value[i]) v = env.value[i], from[i] = env.origin[i];
        else if (!v && file.value[i]) v = file.value[i], from[i] = file.origin[i];
        s->v[i] = v ? strdup(v) : NULL;
        s->origin[i] = from[i];
    }
    /* The secret: --key or --key-file as flags win over both layers, as in `relay agent`. */
    char *hex = NULL;
    const char *key_origin = NULL;
    if (flags.value[K_KEY]) {
        hex = strdup(flags.value[K_KEY]);
    } else if (flags.value[K_KEY_FILE]) {
        hex = read_key_file(flags.value[K_KEY_FILE], NULL);
        if (!hex) goto out;
    } else {
        const char *lk = env.value[K_KEY] ? env.value[K_KEY] : file.value[K_KEY];
        const char *lk_origin = env.value[K_KEY] ? env.origin[K_KEY] : file.origin[K_KEY];
        const char *lf = env.value[K_KEY_FILE] ? env.value[K_KEY_FILE] : file.value[K_KEY_FILE];
        const char *lf_origin = env.value[K_KEY_FILE] ? env.origin[K_KEY_FILE] : file.origin[K_KEY_FILE];
        key_origin = lk_origin;
        if (lk && !env.value[K_KEY] && config_path && require_private(config_path, "--config", NULL) != 0) goto out;
        if (lk) {
            hex = strdup(lk);
        } else if (lf) {
            hex = read_key_file(lf, lf_origin);
            if (!hex) goto out;
        } else {
            fail_config("--key", NULL, "the device secret is needed: give --key or --key-file");
            goto out;
        }
    }
    if (rl_agent_parse_secret(hex, s->secret) != 0) {
        char *t = hex;
        while (*t == ' ' || *t == '\t') t++;
        size_t len = strlen(t);
        while (len && (t[len - 1] == ' ' || t[len - 1] == '\t')) len--;
        char what[64];
        if (len == 2 * RL_SECRET_LEN) snprintf(what, sizeof what, "not all hex digits");
        else snprintf(what, sizeof what, "%zu characters", len);
        fail_config("--key", key_origin,
                    "must be the 64 hex digit secret that `relay device add` printed (the value given is %s)", what);
        memset(hex, 0, strlen(hex));
        free(hex);
        goto out;
    }
    memset(hex, 0, strlen(hex));
    free(hex);
    static const int required[] = {K_RELAY, K_ID, K_FORWARD};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        int k = required[i];
        if (!s->v[k]) {
            char flag[32];
            snprintf(flag, sizeof flag, "--%s", keys[k]);
            fail_config(flag, NULL, "missing: give --%s, RELAY_AGENT_%s or '%s' in a --config file", keys[k],
                        k == K_ID ? "ID" : k == K_RELAY ? "RELAY" : "FORWARD", keys[k]);
            goto out;
        }
    }
    if (!s->v[K_TLS_CERT] != !s->v[K_TLS_KEY]) {
        fail_config("--tls-cert", NULL, "give the certificate and its key together (--tls-cert, --tls-key)");
        goto out;
    }
    if (s->v[K_TLS_CERT] && !s->v[K_CA]) {
        fail_config("--ca", NULL, "a device certificate is only sent over TLS: give --ca too");
        goto out;
    }
    if (s->v[K_TLS_KEY] && require_private(s->v[K_TLS_KEY], "--tls-key", s->origin[K_TLS_KEY]) != 0) goto out;
    s->level = 2;
    if (s->v[K_LOG_LEVEL]) {
        int found = -1;
        for (int i = 0; i < 7; i++)
            if (strcasecmp(s->v[K_LOG_LEVEL], level_names[i]) == 0) found = i;
        if (found < 0) {
            fail_config("--log-level", s->origin[K_LOG_LEVEL], "'%s' is not a log level", s->v[K_LOG_LEVEL]);
            goto out;
        }
        s->level = found;
    }
    /* Origins point into the layers, which go now: keep only whether one was set. */
    for (int i = 0; i < K_N; i++) s->origin[i] = NULL;
    rc = 0;
out:
    if (rc != 0) settings_clear(s);
    layer_clear(&file);
    layer_clear(&env);
    return rc;
}

static rl_agent *make_agent(settings *s) {
    rl_agent_config cfg = {0};
    cfg.relay = s->v[K_RELAY];
    cfg.device_id = s->v[K_ID];
    cfg.forward = s->v[K_FORWARD];
    memcpy(cfg.secret, s->secret, RL_SECRET_LEN);
    cfg.tls_ca = s->v[K_CA];
    cfg.tls_name = s->v[K_TLS_NAME];
    cfg.tls_cert = s->v[K_TLS_CERT];
    cfg.tls_key = s->v[K_TLS_KEY];
    cfg.log = on_log;
    char err[512] = "";
    rl_agent *a = rl_agent_new(&cfg, err, sizeof err);
    memset(cfg.secret, 0, sizeof cfg.secret);
    if (!a) fprintf(stderr, "Error: %s\n", err);
    return a;
}

/* ---- signals ---- */

static volatile sig_atomic_t got_stop, got_reload;
static rl_agent *volatile current;

static void on_signal(int sig) {
    if (sig == SIGHUP) got_reload = 1;
    else got_stop = 1;
    rl_agent *a = current;
    if (a) rl_agent_stop(a);
}

static void set_current(rl_agent *a) {
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, &old);
    current = a;
    sigprocmask(SIG_SETMASK, &old, NULL);
}

/* ---- flags ---- */

static void usage(FILE *f) {
    fprintf(f,
            "USAGE: relay-agent [--config <file>] [--relay <host:port>] [--id <id>] [--key <secret>]\n"
            "                   [--key-file <file>] [--forward <host:port>] [--ca <file>] [--tls-name <name>]\n"
            "                   [--tls-cert <file>] [--tls-key <file>] [--log-level <level>] [--syslog]\n"
            "\n"
            "The device agent (`relay agent` without Swift). Registers with the relay over UDP and, on each\n"
            "wake, connects the relay to --forward. Settings come from the flags, then RELAY_AGENT_<KEY>\n"
            "variables, then --config (YAML, keys named as the flags: relay, id, key, key-file, forward,\n"
            "log-level, ca, tls-name, tls-cert, tls-key). Runs until SIGTERM or SIGINT (it tells the relay\n"
            "it is leaving, then exits 0); SIGHUP re-reads --config. Logs to stderr, or syslog (--syslog).\n");
}

static int parse_flags(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(arg, "--version") == 0) {
            printf("relay-agent %s\n", RELAY_AGENT_VERSION);
            exit(0);
        }
        if (strcmp(arg, "--syslog") == 0) {
            use_syslog = 1;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "Error: unexpected argument '%s'\n", arg);
            return -1;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const char *value = eq ? eq + 1 : NULL;
        if (!value) {
            if (i + 1 >= argc) {
                fprintf(stderr, "Error: missing value for '%s'\n", arg);
                return -1;
            }
            value = argv[++i];
        }
        if (name_len == 6 && strncmp(name, "config", 6) == 0) {
            config_path = value;
            continue;
        }
        int k = -1;
        for (int j = 0; j < K_N; j++)
            if (strlen(keys[j]) == name_len && strncmp(name, keys[j], name_len) == 0) k = j;
        if (k < 0) {
            fprintf(stderr, "Error: unknown option '--%.*s'\n", (int)name_len, name);
            usage(stderr);
            return -1;
        }
        free(flags.value[k]);
        flags.value[k] = strdup(value);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (parse_flags(argc, argv) != 0) return EX_CONFIG;
    settings s;
    if (resolve(&s) != 0) return EX_CONFIG;
    threshold = s.level;
    if (use_syslog) openlog("relay-agent", LOG_PID, LOG_DAEMON);
    rl_agent *a = make_agent(&s);
    if (!a) return EX_CONFIG;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    emit(2, "agent.start", "relay=%s device=%s forward=%s", s.v[K_RELAY], s.v[K_ID], s.v[K_FORWARD]);
    for (;;) {
        set_current(a);
        if (got_stop || got_reload) rl_agent_stop(a); /* a signal before `current` was set */
        rl_agent_run(a);
        set_current(NULL);
        rl_agent_stats st;
        rl_agent_stats_get(a, &st);
        emit(2, "agent.stop", "notify_a_sent=%llu notify_b_sent=%llu links_opened=%llu links_failed=%llu acks=%llu",
             (unsigned long long)st.notify_a_sent, (unsigned long long)st.notify_b_sent,
             (unsigned long long)st.links_opened, (unsigned long long)st.links_failed, (unsigned long long)st.acks);
        rl_agent_free(a);
        a = NULL;
        if (got_stop) break;
        if (!got_reload) {
            emit(5, "agent.failed", "what=the agent loop ended unexpectedly");
            settings_clear(&s);
            return 1;
        }
        got_reload = 0;
        /* SIGHUP: the config file again; a config that does not work keeps the last one. */
        settings next;
        if (resolve(&next) == 0) {
            rl_agent *b = make_agent(&next);
            if (b) {
                settings_clear(&s);
                s = next;
                a = b;
                threshold = s.level;
                emit(2, "agent.reloaded", "relay=%s device=%s forward=%s", s.v[K_RELAY], s.v[K_ID], s.v[K_FORWARD]);
            } else {
                settings_clear(&next);
            }
        }
        if (!a) {
            emit(5, "agent.reload_failed", "what=the new config does not work (see above): keeping the previous one");
            a = make_agent(&s);
            if (!a) {
                settings_clear(&s);
                return 1;
            }
        }
    }
    settings_clear(&s);
    layer_clear(&flags);
    if (use_syslog) closelog();
    return 0;
}
