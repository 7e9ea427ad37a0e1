/// `relay serve`'s config file keys and `RELAY_*` variables (the long flags' names), the
/// effective configuration and reloads: all from ``settingsTable``.
extension RelayConfiguration {
    public static let schema = ConfigLayers.Schema(
        scalars: Set(settingsTable.filter { $0.shape == .scalar }.map(\.key)),
        lists: Set(settingsTable.filter { $0.shape == .list }.map(\.key)))

    public static let environmentPrefix = "RELAY_"

    /// The defaults with every setting of `layers` applied; flags go on top afterwards.
    /// When `keepalive` is not set here, it stays to be derived from the final period.
    public init(layers: ConfigLayers) throws(ConfigurationError) {
        self.init(environment: [:])
        for setting in Self.settingsTable {
            if let origin = try setting.load(&self, layers) { origins[setting.key] = origin }
        }
    }

    /// "off", "none" or "" turn the admin listener off.
    @Sendable public static func adminValue(_ text: String) -> String? {
        let t = text.trimmingWhitespace()
        return ["off", "none", ""].contains(t.lowercased()) ? nil : t
    }

    /// The effective configuration as the config file would say it, each line commented
    /// with where its value came from (`relay check-config`).
    public func effectiveYAML() -> String {
        settings().map { key, value in
            "\(key): \(value)  # \(origins[key] ?? "default")"
        }.joined(separator: "\n") + "\n"
    }

    /// Keys a running relay applies on SIGHUP; the others take a restart.
    public static let reloadableKeys = Set(settingsTable.filter { $0.reload != .restart }.map(\.key))

    /// The certificate keys: a reload loads them into the core (a relay started without TLS
    /// needs a restart for them).
    public static let tlsKeys = Set(settingsTable.filter { $0.reload == .certificates }.map(\.key))

    /// This configuration with every plain reloadable value of `next`; the certificate keys
    /// and the restart-only keys keep their values here.
    public func reloading(from next: RelayConfiguration) -> RelayConfiguration {
        var applied = self
        for setting in Self.settingsTable where setting.reload == .live { setting.copy(&applied, next) }
        return applied
    }

    /// The keys whose values differ from `other`'s.
    public func changedKeys(from other: RelayConfiguration) -> [String] {
        let old = Dictionary(uniqueKeysWithValues: other.settings())
        return settings().filter { old[$0.0] != $0.1 }.map(\.0)
    }

    /// Every setting as (key, YAML value), in the documented order.
    public func settings() -> [(String, String)] {
        Self.settingsTable.map { ($0.key, $0.yaml(self)) }
    }
}
