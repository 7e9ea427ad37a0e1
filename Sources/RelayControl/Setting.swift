import CRelayCore

/// One setting of `relay serve`: its key (the long flag's name, the config file's key and,
/// upper-cased, the `RELAY_*` variable), where it lives in ``RelayConfiguration``, how it is
/// read, shown, checked, reloaded and handed to the C core, and its help. The rows are in
/// Settings.swift; everything else about settings is derived from them.
///
/// Rows are built by the factories in Setting+Kinds.swift from a key path, so that a row
/// cannot read one property and write another.
public struct Setting: Sendable {
    /// Whether the file and the variable hold one value or a list.
    public enum Shape: Sendable { case scalar, list }

    /// What a running relay does with a new value on SIGHUP.
    public enum Reload: Sendable {
        /// Needs a restart (listeners, the store, the registry's size).
        case restart
        /// Copied into the running configuration and the core.
        case live
        /// Certificates: loaded into the core's TLS (a relay started without TLS needs a restart).
        case certificates
    }

    /// How a duration is handed to the core, which also fixes its precision.
    public enum DurationUnit: Sendable {
        /// Whole seconds, at most `UInt32.max`.
        case seconds
        /// From 1 ms to `UInt32.max` ms.
        case milliseconds
        /// Only Swift uses it: any precision.
        case any
    }

    public let key: String
    public let shape: Shape
    /// Durations are checked before counts (the order the refusals have always come in).
    public let isDuration: Bool
    public let reload: Reload
    /// The flag's value name in `--help` ("n", "duration", "addr:port").
    public let valueName: String
    /// One sentence for `--help` and the README, without the default.
    public let help: String
    /// The default as the docs say it, when the value alone does not tell it all.
    let defaultNote: String?
    /// The property, to find a row from a flag (``RelayConfiguration/setting(_:)``).
    let path: PartialKeyPath<RelayConfiguration> & Sendable
    /// The value as text: scalar items (strings unquoted), or the list's items.
    var items: @Sendable (RelayConfiguration) -> [String]
    /// Strings are quoted in YAML; numbers, durations and levels are not.
    let quoted: Bool
    /// Applies the file's or the variable's value; the origin when there was one.
    let load: @Sendable (inout RelayConfiguration, ConfigLayers) throws(ConfigurationError) -> String?
    /// Moves the value from a new configuration into another (a reload).
    let copy: @Sendable (inout RelayConfiguration, RelayConfiguration) -> Void
    /// The range check, run by ``RelayConfiguration/validate()``.
    let check: @Sendable (RelayConfiguration) throws(ConfigurationError) -> Void
    /// Sets the core's field, for the settings the C core uses.
    let toCore: (@Sendable (inout rl_core_config, RelayConfiguration) -> Void)?

    public var flag: String { "--\(key)" }

    /// The value as the config file says it.
    public func yaml(_ configuration: RelayConfiguration) -> String {
        func quote(_ s: String) -> String { "\"\(s.replacingOccurrences(of: "\"", with: "\\\""))\"" }
        let values = items(configuration)
        switch shape {
        case .list: return "[" + values.map(quote).joined(separator: ", ") + "]"
        case .scalar: return quoted ? quote(values[0]) : values[0]
        }
    }

    /// The built-in default as `--help` and the README say it: "64", "5s", "none".
    public var defaultText: String {
        if let defaultNote { return defaultNote }
        let values = items(RelayConfiguration(environment: [:])).filter { !$0.isEmpty }
        return values.isEmpty ? "none" : values.joined(separator: ", ")
    }

    /// The help line of `relay serve --help`.
    public var helpWithDefault: String { "\(help) (default: \(defaultText))" }
}
