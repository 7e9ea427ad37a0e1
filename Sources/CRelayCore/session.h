/* session.h: wakes, the session table, device links and idle reuse (session.c). */
#ifndef RL_SESSION_H
#define RL_SESSION_H

#include "core_types.h"

/* CONNECT_REQUEST resends: after 100 ms, doubling, at most a second apart. */
#define RL_RESEND_FIRST_MS 100u
#define RL_RESEND_MAX_MS 1000u
/* remote: the device is not live here; the cluster's holder of its address is asked (mesh.h). */
rl_session *rl_session_wake(rl_core *core, rl_term *term, const char *device_id, uint64_t id_hash, int remote);
/* A notify moved the anchor of device `id_hash`: this loop's wakes of it re-send
 * CONNECT_REQUEST there at once. 1 when it had any. */
int rl_session_anchor_moved(rl_core *core, uint64_t id_hash);
rl_session *rl_session_find(rl_core *core, const uint8_t sid[RL_SESSION_ID_LEN]);
/* Binds a verified device callback to a waking session. */
void rl_session_bind(rl_session *s, rl_stream *link);
/* The wake fails after the device called back (its certificate): the terminal hears
 * `status` and `body`, and the session ends. */
void rl_session_fail(rl_session *s, int status, const char *body);
/* Attaches a terminal to an idle session (reuse: no wake); the caller starts the exchange. */
void rl_session_attach(rl_session *s, rl_term *term);
/* The terminal leaves: the link goes idle when it is at a message boundary, else closes. */
void rl_session_detach(rl_session *s);
/* Ends the session: unlinked and silent at once, freed after the current callback (reap.h). */
void rl_session_end(rl_session *s);
/* The only writers of t->sess and s->term: a terminal and a session, paired or apart. */
void rl_pair(rl_term *t, rl_session *s);
void rl_unpair(rl_term *t);
/* No message in flight either way: the link may be kept or handed over. */
int rl_session_at_boundary(const rl_session *s);
void rl_session_end_device(rl_core *core, uint64_t id_hash);
void rl_session_end_all(rl_core *core);
/* Draining: frees sessions that wait idle for reuse. */
void rl_session_end_idle(rl_core *core);
#endif
