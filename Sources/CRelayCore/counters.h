/*
 * counters.h: every family GET /metrics serves, in the order it serves them, and the
 * counters behind them. One row per counter generates its field in struct rl_counters
 * (core_types.h) and its sample in metrics.c, so a counter cannot exist without its metric:
 *
 *   COUNTER(field, type, "metric", "labels", "help")
 *
 * Rows with the same metric, one after the other, are one family told apart by their labels;
 * the first row opens the family (HELP and TYPE) and the others leave help "". BY_HAND(fn)
 * is a family metrics.c renders itself: arrays (drops, histogram, responses), sums and values
 * that are not counters (registry size, configuration, limit tables). Their counters are the
 * few fields core_types.h declares by hand below the generated ones.
 *
 * Field names are the ones the increments use (core->ctr.dgram_rx): renaming one here
 * renames it everywhere.
 */
#ifndef RL_COUNTERS_H
#define RL_COUNTERS_H

#define RL_METRICS(COUNTER, BY_HAND)                                                                              \
    BY_HAND(render_registry)                                                                                      \
    COUNTER(registry_full, counter, "relay_registry_full_total", "",                                              \
            "Devices not added because the registry was full.")                                                   \
    BY_HAND(render_period)                                                                                        \
                                                                                                                  \
    COUNTER(dgram_rx, counter, "relay_datagrams_received_total", "", "UDP datagrams received from devices.")      \
    COUNTER(notify_a_ok, counter, "relay_notify_total", "{kind=\"a\"}",                                           \
            "Notifies accepted, by kind (a: liveness and anchor, b: anchor only).")                               \
    COUNTER(notify_b_ok, counter, "relay_notify_total", "{kind=\"b\"}", "")                                       \
    COUNTER(period_requests, counter, "relay_period_requests_total", "", "Period requests answered.")             \
    BY_HAND(render_drops)                                                                                         \
    COUNTER(address_changes, counter, "relay_address_changes_total", "",                                          \
            "Device anchors that moved to a new address, port or socket.")                                        \
    COUNTER(notify_acks, counter, "relay_notify_acks_total", "", "NOTIFY_ACKs sent: one per accepted notify or LEAVE.") \
    COUNTER(leaves, counter, "relay_device_leaves_total", "", "LEAVEs accepted: agents that said they were stopping.") \
    COUNTER(anchor_flaps, counter, "relay_anchor_flaps_total", "",                                                \
            "Anchor moves back to the source it had just left (two agents with one device ID, or a flapping NAT).") \
    COUNTER(rejects_sent, counter, "relay_rejects_sent_total", "",                                                \
            "REJECTs sent to period requests for unknown devices or with bad tags (at most 10 a second).")        \
    COUNTER(events_lost, counter, "relay_events_lost_total", "",                                                  \
            "Operator events not logged because the log was behind.")                                             \
                                                                                                                  \
    COUNTER(conn_requests_sent, counter, "relay_connection_requests_sent_total", "",                              \
            "Connection requests sent, retransmissions included.")                                                \
    COUNTER(wakes_started, counter, "relay_wakes_total", "{outcome=\"started\"}",                                 \
            "Device wakes by outcome: started, bound, timeout, offline (nothing sent), refused (a limit, a "      \
            "certificate).")                                                                                      \
    COUNTER(wakes_bound, counter, "relay_wakes_total", "{outcome=\"bound\"}", "")                                 \
    COUNTER(wakes_timeout, counter, "relay_wakes_total", "{outcome=\"timeout\"}", "")                             \
    COUNTER(wakes_refused_by_cluster, counter, "relay_wakes_total", "{outcome=\"cluster_offline\"}", "")          \
    BY_HAND(render_wakes_not_sent)                                                                                \
    BY_HAND(render_wake_histogram)                                                                                \
    COUNTER(wakes_cross_node, counter, "relay_cross_node_wakes_total", "",                                        \
            "Wakes of a device this node has no live anchor for, asked of the cluster's other nodes.")             \
    COUNTER(callbacks_rejected, counter, "relay_callbacks_rejected_total", "",                                    \
            "Device callbacks refused (bad hello, session or proof).")                                            \
                                                                                                                  \
    COUNTER(refused_offline, counter, "relay_requests_refused_total", "{reason=\"offline\"}",                     \
            "Terminal requests the relay answered itself, by reason.")                                            \
    COUNTER(refused_unknown, counter, "relay_requests_refused_total", "{reason=\"unknown\"}", "")                 \
    COUNTER(refused_unauthorized, counter, "relay_requests_refused_total", "{reason=\"unauthorized\"}", "")       \
    COUNTER(refused_forbidden, counter, "relay_requests_refused_total", "{reason=\"forbidden\"}", "")             \
    COUNTER(refused_bad_request, counter, "relay_requests_refused_total", "{reason=\"bad_request\"}", "")         \
    COUNTER(refused_capacity, counter, "relay_requests_refused_total", "{reason=\"capacity\"}", "")               \
    BY_HAND(render_responses)                                                                                     \
    COUNTER(limited_source_conns, counter, "relay_limit_rejections_total", "{limit=\"source_connections\"}",      \
            "Terminals refused with 429 by an abuse limit, and bound terminals closed for idling.")               \
    COUNTER(limited_source_rate, counter, "relay_limit_rejections_total", "{limit=\"source_rate\"}", "")          \
    COUNTER(limited_device_sessions, counter, "relay_limit_rejections_total", "{limit=\"device_sessions\"}", "")  \
    COUNTER(limited_device_wakes, counter, "relay_limit_rejections_total", "{limit=\"device_wakes\"}", "")        \
    COUNTER(limited_callback_source, counter, "relay_limit_rejections_total", "{limit=\"callback_source\"}", "")  \
    COUNTER(idle_timeouts, counter, "relay_limit_rejections_total", "{limit=\"idle_timeout\"}", "")               \
    COUNTER(accept_paused, counter, "relay_accept_paused_total", "",                                              \
            "Times the listeners paused accepting because the process ran out of file descriptors.")              \
    BY_HAND(render_admin_unauthorized)                                                                            \
    BY_HAND(render_tracked_keys)                                                                                  \
    COUNTER(tls_terminal_ok, counter, "relay_tls_handshakes_total", "{leg=\"terminal\",outcome=\"ok\"}",          \
            "TLS handshakes, by leg and outcome.")                                                                \
    COUNTER(tls_terminal_failed, counter, "relay_tls_handshakes_total", "{leg=\"terminal\",outcome=\"failed\"}", "") \
    COUNTER(tls_device_ok, counter, "relay_tls_handshakes_total", "{leg=\"device\",outcome=\"ok\"}", "")          \
    COUNTER(tls_device_failed, counter, "relay_tls_handshakes_total", "{leg=\"device\",outcome=\"failed\"}", "")  \
    COUNTER(device_certs_refused, counter, "relay_device_certificates_refused_total", "",                         \
            "Device callbacks whose certificate was missing, invalid or for another device.")                     \
    COUNTER(terminals_open, gauge, "relay_terminal_connections", "", "Open terminal connections.")                \
    COUNTER(sessions_active, gauge, "relay_sessions_active", "", "Sessions waking, bound or idle.")               \
    COUNTER(sessions_reused, counter, "relay_sessions_reused_total", "",                                          \
            "Terminal connections served on an idle link, without a wake.")                                       \
    COUNTER(splices, counter, "relay_spliced_bodies_total", "",                                                   \
            "Response bodies moved device -> terminal with splice(2), inside the kernel.")                        \
    COUNTER(bytes_to_device, counter, "relay_relayed_bytes_total", "{direction=\"to_device\"}",                   \
            "Bytes relayed, by direction.")                                                                       \
    COUNTER(bytes_to_terminal, counter, "relay_relayed_bytes_total", "{direction=\"to_terminal\"}", "")           \
    BY_HAND(render_draining)                                                                                      \
    BY_HAND(render_threads)                                                                                       \
    BY_HAND(render_mesh)

#endif
