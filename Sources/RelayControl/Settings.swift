import CRelayCore

/// Every setting of `relay serve`, once, in the order `relay check-config` prints them.
///
/// From these rows come the config schema, ``init(layers:)``, ``settings()``, the changed
/// keys and reloads on SIGHUP, the range checks of ``validate()``, the C core's
/// configuration, the help of `relay serve --help` and the README's settings table
/// (`relay check-config --print-settings-table`). The defaults are the property
/// initializers of ``RelayConfiguration``; `rl_core_config_defaults` is checked against them.
extension RelayConfiguration {
    public static let settingsTable: [Setting] = [
        .text(
            "data", \.dataDirectory, valueName: "dir", help: "Directory of the device store (relay.sqlite).",
            defaultNote: "./relay-data, or $RELAY_DATA"),
        .store(
            "store", \.store,
            help: "Where devices, tokens and keys live: sqlite (relay.sqlite in --data) or a postgres:// URL "
                + "that a cluster's nodes and the CLI share (a passfile or PGPASSWORD keeps the password out of it)."),
        .list("http", \.http, valueName: "addr:port", help: "Terminal HTTP listener; repeat for more addresses."),
        .optionalList(
            "https", \.https, effective: \.effectiveHTTPS, valueName: "addr:port",
            help: "Terminal HTTPS listener; repeatable.",
            defaultNote: "\(defaultHTTPS.joined(separator: ", ")) with a certificate"),
        .list(
            "udp", \.udp, valueName: "addr:port",
            help: "Device UDP listener (notifies, wakes); devices are configured with this address. Repeatable."),
        .list(
            "tcp", \.tcp, valueName: "addr:port",
            help: "Device TCP callback listener; its port is told to devices in the protocol. Repeatable."),
        .list(
            "floating", \.floating, valueName: "ip",
            help: "A floating address (keepalived, VRRP) that this node holds only part of the time: listeners on it "
                + "are bound before it arrives and kept while another node holds it (IP_FREEBIND). Repeatable."),
        .count(
            "node", \.node, 0...255,
            help: "This node's number in a cluster (1 to 255, unique per node); 0: not a cluster node."),
        .list(
            "mesh", \.mesh, valueName: "addr:port",
            help: "Where this node takes WAKEs from other nodes: its own private address and the private mesh "
                + "addresses that float with its device addresses (list those in --floating). Repeatable."),
        .list(
            "mesh-peer", \.meshPeers, valueName: "addr:port",
            help: "Where WAKEs go: one private mesh address per floating device address, held with it. Listing any "
                + "makes this node wake devices other nodes hold. Repeatable."),
        .optionalText(
            "mesh-key-file", \.meshKeyFile, valueName: "file",
            help: "The cluster key: 64 hex digits (32 random bytes), the same file on every node, readable by the "
                + "relay alone.", shown: "", parse: { $0.isEmpty ? nil : $0 }),
        .optionalText(
            "callback-host", \.callbackHost, valueName: "ip",
            help: "This node's own address that devices reach (not a floating one): a wake for a terminal here tells "
                + "the device to call back to it, on --tcp's port.", shown: "", parse: { $0.isEmpty ? nil : $0 }),
        .list("metrics", \.metrics, valueName: "addr:port", help: "Prometheus text at GET /metrics; repeatable."),
        .optionalText(
            "admin", \.admin, valueName: "addr:port",
            help: "Admin API and console listener (TLS with --tls-cert), or off.",
            defaultNote: "\(defaultAdmin!), the port picked at start and written to <data>/admin.json",
            shown: "off", parse: adminValue),
        .list(
            "tls-cert", \.tlsCerts, reload: .certificates, valueName: "file",
            help: "TLS certificate chain (PEM); repeatable, SNI picks by name (wildcards too), the first is the "
                + "default and the device leg's. Turns TLS on for both legs."),
        .list(
            "tls-key", \.tlsKeys, reload: .certificates, valueName: "file",
            help: "The private key (PEM) of each --tls-cert, in the same order."),
        .optionalText(
            "device-ca", \.deviceCA, reload: .certificates, valueName: "file",
            help: "CA whose certificates devices must present, naming their ID.",
            shown: "", parse: { $0.isEmpty ? nil : $0 }),  // "" in a file: none
        .text("domain", \.domain, valueName: "name", help: "Host routing serves <id>.<domain>; \"\" turns it off."),
        .duration(
            "period", \.period, .seconds, .seconds(2)...maxSeconds,
            refusal: "must be at least 2 seconds (agents notify every period / 2)", valueName: "seconds",
            help: "Max access period: a device whose last notify A is older is offline (503).",
            core: \rl_core_config.period_s),
        .duration(
            "keepalive", \.keepalive, .seconds, .seconds(1)...maxSeconds, refusal: "must be at least 1 second",
            valueName: "seconds",
            help: "Notify B interval told to agents; below --period and below a NAT's timeout for a mapping that "
                + "has seen no answer yet (30 s on Linux; docs/PROTOCOL.md, \"Keepalive arithmetic\").",
            defaultNote: "25s, or half of --period when shorter", core: \rl_core_config.keepalive_s),
        .count(
            "threads", \.threads, 1...Int(RL_MAX_THREADS), unit: "loop threads",
            help: "Loop threads: each has its own share of the UDP sockets (by device), of the terminal listeners "
                + "(by source address) and a device callback port (--tcp's port plus its index); 1 runs one loop, "
                + "as the relay always did.",
            defaultNote: "the online CPUs, at most \(maxDefaultThreads)", core: \rl_core_config.threads),
        .count(
            "capacity", \.capacity, 1...Int(UInt32.max), unit: "devices",
            help: "Registry size in devices (about 61 bytes each, touched only when used).", core: \rl_core_config.capacity),
        .count(
            "max-sessions", \.maxSessions, 1...Int(UInt32.max),
            help: "Concurrent terminal sessions (waking, bound or idle).", core: \rl_core_config.max_sessions),
        .duration(
            "wake-timeout", \.wakeTimeout, .milliseconds,
            help: "A device that has not called back within this gets the terminal a 504.",
            core: \rl_core_config.wake_timeout_ms),
        .duration(
            "idle-link", \.idleLink, .seconds, .zero...maxSeconds, refusal: "must be from 0 to \(UInt32.max) seconds",
            help: "How long an idle device link is kept for reuse (X-Relay-Session).", core: \rl_core_config.idle_link_s),
        .count(
            "max-header-bytes", \.maxHeaderBytes, 1024...(1 << 20), unit: "bytes", reload: .live, valueName: "bytes",
            help: "Largest terminal request head (431 above).", core: \rl_core_config.max_header_bytes),
        .duration(
            "header-timeout", \.headerTimeout, .milliseconds,
            help: "A terminal must send its request head within this (408 after).", core: \rl_core_config.header_timeout_ms),
        .count(
            "max-conns-per-source", \.maxConnsPerSource, limit, reload: .live,
            help: "Open terminal connections from one address (429 above); 0: no limit.",
            core: \rl_core_config.max_conns_per_source),
        .count(
            "conn-rate-per-source", \.connRatePerSource, limit, reload: .live,
            help: "New terminal connections per second from one address (429 above); 0: no limit.",
            core: \rl_core_config.conn_rate_per_source),
        .count(
            "max-callbacks-per-source", \.maxCallbacksPerSource, limit, reload: .live,
            help: "Device callbacks from one address whose hello has not verified yet (status 0x06 and close "
                + "above); 0: no limit.",
            core: \rl_core_config.max_callbacks_per_source),
        .count(
            "max-sessions-per-device", \.maxSessionsPerDevice, limit, reload: .live,
            help: "Sessions (waking, bound or idle) of one device (429 above); 0: no limit.",
            core: \rl_core_config.max_sessions_per_device),
        .count(
            "wakes-per-device-minute", \.wakesPerDeviceMinute, limit, reload: .live,
            help: "Wakes of one device per minute (429 with Retry-After above); 0: no limit.",
            core: \rl_core_config.wakes_per_device_minute),
        .duration(
            "idle-timeout", \.idleTimeout, .seconds, .zero...maxSeconds, refusal: "must be 0 (no limit) or more",
            help: "A bound terminal with no byte either way for this long is closed; 0: never.",
            core: \rl_core_config.idle_timeout_s),
        .duration(
            "drain-timeout", \.drainTimeout, .any, .zero...(.seconds(3600)), refusal: "must be from 0 to 1h",
            help: "On SIGTERM, how long sessions in flight may take to finish."),
        .logLevel(
            "log-level", \.logLevel,
            help: "Log threshold on stderr: trace, debug, info, notice, warning, error or critical."),
    ]

    /// The abuse limits' range: 0 turns one off, and the core counts in 32 bits.
    private static let limit = 0...Int(UInt32.max)
    /// The largest whole-second duration the core takes.
    private static let maxSeconds = Duration.seconds(Int64(UInt32.max))

    /// The row of the property `path` (a flag's setting). Every setting has one.
    public static func setting(_ path: PartialKeyPath<RelayConfiguration>) -> Setting {
        guard let row = settingsTable.first(where: { $0.path == path }) else {
            preconditionFailure("no row in settingsTable for \(path)")
        }
        return row
    }

    /// The row of `key`, or nil.
    public static func setting(key: String) -> Setting? { settingsTable.first { $0.key == key } }
}
