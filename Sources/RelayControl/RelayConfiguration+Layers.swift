import Logging

/// `relay serve`'s config file keys and `RELAY_*` variables: the long flags' names.
extension RelayConfiguration {
    public static let schema = ConfigLayers.Schema(
        scalars: [
            "data", "domain", "period", "keepalive", "capacity", "max-sessions", "wake-timeout", "idle-link",
            "max-header-bytes", "header-timeout", "drain-timeout", "log-level", "max-conns-per-source",
            "conn-rate-per-source", "max-callbacks-per-source", "max-sessions-per-device", "wakes-per-device-minute", "idle-timeout",
            "device-ca", "admin",
        ],
        lists: ["http", "https", "udp", "tcp", "metrics", "tls-cert", "tls-key"])

    public static let environmentPrefix = "RELAY_"

    /// The defaults with every setting of `layers` applied; flags go on top afterwards.
    /// When `keepalive` is not set here, it stays to be derived from the final period.
    public init(layers: ConfigLayers) throws(ConfigurationError) {
        self.init(environment: [:])
        if let v = layers.string("data") { dataDirectory = v.value; origins["data"] = v.origin }
        for kind in ListenerKind.allCases {
            guard let v = layers.list(kind.name) else { continue }
            origins[kind.name] = v.origin
            switch kind {
            case .http: http = v.value
            case .https: https = v.value
            case .udp: udp = v.value
            case .tcp: tcp = v.value
            case .metrics: metrics = v.value
            }
        }
        if let v = layers.string("admin") {
            admin = Self.adminValue(v.value)
            origins["admin"] = v.origin
        }
        if let v = layers.string("domain") { domain = v.value; origins["domain"] = v.origin }
        if let v = layers.list("tls-cert") { tlsCerts = v.value; origins["tls-cert"] = v.origin }
        if let v = layers.list("tls-key") { tlsKeys = v.value; origins["tls-key"] = v.origin }
        if let v = layers.string("device-ca") {
            deviceCA = v.value.isEmpty ? nil : v.value  // "" in a file: none
            origins["device-ca"] = v.origin
        }
        try Self.duration(layers, "period") { period = $0 }
        try Self.duration(layers, "keepalive") { keepalive = $0 }
        try Self.integer(layers, "capacity") { capacity = $0 }
        try Self.integer(layers, "max-sessions") { maxSessions = $0 }
        try Self.duration(layers, "wake-timeout") { wakeTimeout = $0 }
        try Self.duration(layers, "idle-link") { idleLink = $0 }
        try Self.integer(layers, "max-header-bytes") { maxHeaderBytes = $0 }
        try Self.duration(layers, "header-timeout") { headerTimeout = $0 }
        try Self.duration(layers, "drain-timeout") { drainTimeout = $0 }
        try Self.integer(layers, "max-conns-per-source") { maxConnsPerSource = $0 }
        try Self.integer(layers, "conn-rate-per-source") { connRatePerSource = $0 }
        try Self.integer(layers, "max-callbacks-per-source") { maxCallbacksPerSource = $0 }
        try Self.integer(layers, "max-sessions-per-device") { maxSessionsPerDevice = $0 }
        try Self.integer(layers, "wakes-per-device-minute") { wakesPerDeviceMinute = $0 }
        try Self.duration(layers, "idle-timeout") { idleTimeout = $0 }
        if let v = layers.string("log-level") {
            guard let level = Logger.Level(rawValue: v.value.lowercased()) else {
                let names = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
                throw ConfigurationError(flag: "--log-level", "'\(v.value)' is not one of \(names)", origin: v.origin)
            }
            logLevel = level
        }
        for key in Self.schema.scalars where origins[key] == nil {
            if let v = layers.string(key) { origins[key] = v.origin }
        }
    }

    /// "off", "none" or "" turn the admin listener off.
    public static func adminValue(_ text: String) -> String? {
        let t = text.trimmingWhitespace()
        return ["off", "none", ""].contains(t.lowercased()) ? nil : t
    }

    private static func duration(
        _ layers: ConfigLayers, _ key: String, _ set: (Duration) -> Void
    ) throws(ConfigurationError) {
        guard let v = layers.string(key) else { return }
        do {
            set(try Durations.parse(v.value))
        } catch {
            throw ConfigurationError(flag: "--\(key)", "\(error)", origin: v.origin)
        }
    }

    private static func integer(_ layers: ConfigLayers, _ key: String, _ set: (Int) -> Void) throws(ConfigurationError) {
        guard let v = layers.string(key) else { return }
        guard let n = Int(v.value.trimmingWhitespace()) else {
            throw ConfigurationError(flag: "--\(key)", "'\(v.value)' is not a whole number", origin: v.origin)
        }
        set(n)
    }

    /// The effective configuration as the config file would say it, each line commented
    /// with where its value came from (`relay check-config`).
    public func effectiveYAML() -> String {
        settings().map { key, value in
            "\(key): \(value)  # \(origins[key] ?? "default")"
        }.joined(separator: "\n") + "\n"
    }

    /// Keys a running relay applies on SIGHUP; the others take a restart.
    public static let reloadableKeys = Set(reloaders.keys).union(tlsKeys)

    /// The certificate keys: a reload loads them into the core (a relay started without TLS
    /// needs a restart for them).
    public static let tlsKeys: Set<String> = ["tls-cert", "tls-key", "device-ca"]

    /// How each plain reloadable key moves from a new configuration into the running one.
    private static let reloaders: [String: @Sendable (inout RelayConfiguration, RelayConfiguration) -> Void] = [
        "period": { $0.period = $1.period },
        "keepalive": { $0.keepalive = $1.keepalive },
        "wake-timeout": { $0.wakeTimeout = $1.wakeTimeout },
        "idle-link": { $0.idleLink = $1.idleLink },
        "max-header-bytes": { $0.maxHeaderBytes = $1.maxHeaderBytes },
        "header-timeout": { $0.headerTimeout = $1.headerTimeout },
        "drain-timeout": { $0.drainTimeout = $1.drainTimeout },
        "log-level": { $0.logLevel = $1.logLevel },
        "max-conns-per-source": { $0.maxConnsPerSource = $1.maxConnsPerSource },
        "conn-rate-per-source": { $0.connRatePerSource = $1.connRatePerSource },
        "max-callbacks-per-source": { $0.maxCallbacksPerSource = $1.maxCallbacksPerSource },
        "max-sessions-per-device": { $0.maxSessionsPerDevice = $1.maxSessionsPerDevice },
        "wakes-per-device-minute": { $0.wakesPerDeviceMinute = $1.wakesPerDeviceMinute },
        "idle-timeout": { $0.idleTimeout = $1.idleTimeout },
    ]

    /// This configuration with every plain reloadable value of `next`; the certificate keys
    /// and the restart-only keys keep their values here.
    public func reloading(from next: RelayConfiguration) -> RelayConfiguration {
        var applied = self
        for reload in Self.reloaders.values { reload(&applied, next) }
        return applied
    }

    /// The keys whose values differ from `other`'s.
    public func changedKeys(from other: RelayConfiguration) -> [String] {
        let old = Dictionary(uniqueKeysWithValues: other.settings())
        return settings().filter { old[$0.0] != $0.1 }.map(\.0)
    }

    /// Every setting as (key, YAML value), in the documented order.
    public func settings() -> [(String, String)] {
        func quoted(_ s: String) -> String { "\"\(s.replacingOccurrences(of: "\"", with: "\\\""))\"" }
        func list(_ a: [String]) -> String { "[" + a.map(quoted).joined(separator: ", ") + "]" }
        func seconds(_ d: Duration) -> String {
            d.components.attoseconds == 0 ? "\(d.components.seconds)s" : "\(d.wholeMilliseconds)ms"
        }
        return [
            ("data", quoted(dataDirectory)),
            ("http", list(http)), ("https", list(effectiveHTTPS)), ("udp", list(udp)), ("tcp", list(tcp)),
            ("metrics", list(metrics)), ("admin", quoted(admin ?? "off")),
            ("tls-cert", list(tlsCerts)), ("tls-key", list(tlsKeys)), ("device-ca", quoted(deviceCA ?? "")),
            ("domain", quoted(domain)),
            ("period", seconds(period)), ("keepalive", seconds(keepalive)),
            ("capacity", "\(capacity)"), ("max-sessions", "\(maxSessions)"),
            ("wake-timeout", seconds(wakeTimeout)), ("idle-link", seconds(idleLink)),
            ("max-header-bytes", "\(maxHeaderBytes)"), ("header-timeout", seconds(headerTimeout)),
            ("max-conns-per-source", "\(maxConnsPerSource)"), ("conn-rate-per-source", "\(connRatePerSource)"),
            ("max-callbacks-per-source", "\(maxCallbacksPerSource)"),
            ("max-sessions-per-device", "\(maxSessionsPerDevice)"),
            ("wakes-per-device-minute", "\(wakesPerDeviceMinute)"), ("idle-timeout", seconds(idleTimeout)),
            ("drain-timeout", seconds(drainTimeout)), ("log-level", logLevel.rawValue),
        ]
    }
}
