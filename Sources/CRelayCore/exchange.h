/*
 * exchange.h: one terminal's traffic over one device link, both directions [claims 2, 10,
 * 16]. Each direction has one home here: its HTTP framing (the terminal's flow for
 * requests, the session's for responses), its head hook (requests are routed, authorized
 * and rewritten; responses get X-Relay-Session), its byte counts, and for large response
 * bodies its kernel path (splice.h). One pump moves either direction; the pipeline of
 * requests awaiting responses has one owner. The readiness of either side calls the pump:
 * a readable source, or a destination that drained.
 */
#ifndef RL_EXCHANGE_H
#define RL_EXCHANGE_H

#include "core_types.h"

/* The pipeline: what each forwarded request awaits (1: a HEAD request, its response has no
 * body), oldest first. */
static inline uint32_t rl_pipeline_len(const rl_pipeline *p) { return p->count; }
static inline int rl_pipeline_front_is_head(const rl_pipeline *p) { return p->count && p->is_head[p->first]; }

/* `t`'s session has its link (a wake was answered, or an idle link reused): bytes flow. */
void rl_xchg_begin(rl_term *t);
/* Terminal -> device: forwards what `t` sent (every head routed and rewritten first). */
void rl_xchg_pump_request(rl_term *t);
/* Device -> terminal. */
void rl_xchg_pump_response(rl_session *s);
/* The terminal leaves its session (logged); the link stays idle for reuse only if `keep_link`. */
void rl_xchg_leave(rl_term *t, int keep_link);
/* Draining: the response is complete; the session ends and `t` closes once it is written. */
void rl_xchg_finish(rl_term *t);
/* Logs `t`'s exchange with its session: `status` (0: the device's last) and RL_OUTCOME_*. */
void rl_xchg_record(rl_term *t, int status, int outcome);

#endif
