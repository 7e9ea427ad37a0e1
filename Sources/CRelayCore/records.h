/* records.h: session records and operator events for the control layer (records.c). */
#ifndef RL_RECORDS_H
#define RL_RECORDS_H

#include "core_types.h"

void rl_core_push_record(rl_core *core, const rl_session_record *rec);
/* Queues an operator event (RL_EVENT_*) for the control layer's log; dropped and counted
 * when the log is behind. Callers rate-limit what an outsider can trigger. */
void rl_core_push_event(rl_core *core, uint32_t kind, const char *device_id, size_t id_len, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
