import CRelayCore
import Logging

/// One setting of `relay serve`: its key (the long flag's name, the config file's key and,
/// upper-cased, the `RELAY_*` variable), where it lives in ``RelayConfiguration``, how it is
/// read, shown, checked, reloaded and handed to the C core, and its help. The rows are in
/// Settings.swift; everything else about settings is derived from them.
///
/// Rows are built by the factories below from a key path, so that a row cannot read one
/// property and write another.
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
    private(set) var items: @Sendable (RelayConfiguration) -> [String]
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

// MARK: - Rows by kind

extension Setting {
    typealias Path<Value> = WritableKeyPath<RelayConfiguration, Value> & Sendable
    typealias CoreField = WritableKeyPath<rl_core_config, UInt32> & Sendable

    /// The shared part of every factory: read, write and copy through one key path.
    private static func row<Value: Sendable>(
        _ key: String, _ path: Path<Value>, shape: Shape = .scalar, isDuration: Bool = false, quoted: Bool,
        reload: Reload,
        valueName: String, help: String, defaultNote: String? = nil,
        items: @escaping @Sendable (Value) -> [String],
        parse: @escaping @Sendable (ConfigLayers.Sourced<[String]>) throws(ConfigurationError) -> Value,
        check: @escaping @Sendable (Value) throws(ConfigurationError) -> Void = { _ throws(ConfigurationError) in },
        toCore: (@Sendable (inout rl_core_config, Value) -> Void)? = nil
    ) -> Setting {
        let shown: @Sendable (RelayConfiguration) -> [String] = { items($0[keyPath: path]) }
        let load: @Sendable (inout RelayConfiguration, ConfigLayers) throws(ConfigurationError) -> String? = {
            configuration, layers throws(ConfigurationError) in
            let given: ConfigLayers.Sourced<[String]>?
            switch shape {
            case .list: given = layers.list(key)
            case .scalar: given = layers.string(key).map { ConfigLayers.Sourced(value: [$0.value], origin: $0.origin) }
            }
            guard let given else { return nil }
            configuration[keyPath: path] = try parse(given)
            return given.origin
        }
        let copy: @Sendable (inout RelayConfiguration, RelayConfiguration) -> Void = {
            $0[keyPath: path] = $1[keyPath: path]
        }
        let checkValue: @Sendable (RelayConfiguration) throws(ConfigurationError) -> Void = {
            configuration throws(ConfigurationError) in try check(configuration[keyPath: path])
        }
        var core: (@Sendable (inout rl_core_config, RelayConfiguration) -> Void)? = nil
        if let toCore { core = { config, configuration in toCore(&config, configuration[keyPath: path]) } }
        return Setting(
            key: key, shape: shape, isDuration: isDuration, reload: reload, valueName: valueName, help: help,
            defaultNote: defaultNote, path: path, items: shown, quoted: quoted, load: load, copy: copy,
            check: checkValue, toCore: core)
    }

    /// A string, quoted in YAML.
    static func text(
        _ key: String, _ path: Path<String>, reload: Reload = .restart, valueName: String, help: String,
        defaultNote: String? = nil
    ) -> Setting {
        row(key, path, quoted: true, reload: reload, valueName: valueName, help: help, defaultNote: defaultNote,
            items: { [$0] }, parse: { $0.value[0] })
    }

    /// A string that may be absent: `parse` maps the given text, `shown` names the absence.
    static func optionalText(
        _ key: String, _ path: Path<String?>, reload: Reload = .restart, valueName: String, help: String,
        defaultNote: String? = nil, shown absent: String, parse: @escaping @Sendable (String) -> String?
    ) -> Setting {
        row(key, path, quoted: true, reload: reload, valueName: valueName, help: help, defaultNote: defaultNote,
            items: { [$0 ?? absent] }, parse: { parse($0.value[0]) })
    }

    /// A list of strings (repeatable flag, comma-separated variable).
    static func list(
        _ key: String, _ path: Path<[String]>, reload: Reload = .restart, valueName: String, help: String,
        defaultNote: String? = nil
    ) -> Setting {
        row(key, path, shape: .list, quoted: true, reload: reload, valueName: valueName, help: help,
            defaultNote: defaultNote, items: { $0 }, parse: { $0.value })
    }

    /// A list that has a computed default while unset (`https`): shown as `effective`.
    static func optionalList(
        _ key: String, _ path: Path<[String]?>, effective: KeyPath<RelayConfiguration, [String]> & Sendable,
        valueName: String, help: String, defaultNote: String
    ) -> Setting {
        var setting = row(
            key, path, shape: .list, quoted: true, reload: .restart, valueName: valueName, help: help,
            defaultNote: defaultNote, items: { $0 ?? [] }, parse: { $0.value })
        setting.items = { $0[keyPath: effective] }
        return setting
    }

    /// A whole number within `range`; `unit` ends the refusal ("devices", "bytes"). A range
    /// from 0 is a limit, which 0 turns off.
    static func count(
        _ key: String, _ path: Path<Int>, _ range: ClosedRange<Int>, unit: String = "", reload: Reload = .restart,
        valueName: String = "n", help: String, core: CoreField? = nil
    ) -> Setting {
        let from = range.lowerBound == 0 ? "0 (no limit)" : "\(range.lowerBound)"
        let refusal = "must be from \(from) to \(range.upperBound)" + (unit.isEmpty ? "" : " \(unit)")
        let parse: @Sendable (ConfigLayers.Sourced<[String]>) throws(ConfigurationError) -> Int = {
            given throws(ConfigurationError) in
            guard let n = Int(given.value[0].trimmingWhitespace()) else {
                throw ConfigurationError(flag: "--\(key)", "'\(given.value[0])' is not a whole number", origin: given.origin)
            }
            return n
        }
        let check: @Sendable (Int) throws(ConfigurationError) -> Void = { n throws(ConfigurationError) in
            if !range.contains(n) { throw ConfigurationError(flag: "--\(key)", refusal) }
        }
        var toCore: (@Sendable (inout rl_core_config, Int) -> Void)? = nil
        if let core { toCore = { config, n in config[keyPath: core] = UInt32(n) } }
        return row(
            key, path, quoted: false, reload: reload, valueName: valueName, help: help, items: { ["\($0)"] },
            parse: parse, check: check, toCore: toCore)
    }

    /// A duration ("90", "500ms", "30s", "15m"): `unit` is its precision and how the core
    /// takes it; outside `range` it is refused with `refusal` (milliseconds have their range).
    static func duration(
        _ key: String, _ path: Path<Duration>, _ unit: DurationUnit, _ range: ClosedRange<Duration>? = nil,
        refusal: String = "", reload: Reload = .live, valueName: String = "duration", help: String,
        defaultNote: String? = nil, core: CoreField? = nil
    ) -> Setting {
        let parse: @Sendable (ConfigLayers.Sourced<[String]>) throws(ConfigurationError) -> Duration = {
            given throws(ConfigurationError) in
            do {
                return try Durations.parse(given.value[0])
            } catch {
                throw ConfigurationError(flag: "--\(key)", "\(error)", origin: given.origin)
            }
        }
        let check: @Sendable (Duration) throws(ConfigurationError) -> Void = { value throws(ConfigurationError) in
            try unit.check(value, flag: "--\(key)")
            if let range, !range.contains(value) { throw ConfigurationError(flag: "--\(key)", refusal) }
        }
        var toCore: (@Sendable (inout rl_core_config, Duration) -> Void)? = nil
        if let core {
            toCore = { config, d in
                config[keyPath: core] = UInt32(unit == .milliseconds ? d.wholeMilliseconds : d.wholeSeconds)
            }
        }
        return row(
            key, path, isDuration: true, quoted: false, reload: reload, valueName: valueName, help: help,
            defaultNote: defaultNote, items: { [$0.configText] }, parse: parse, check: check, toCore: toCore)
    }

    /// The log threshold, one of swift-log's level names.
    static func logLevel(_ key: String, _ path: Path<Logger.Level>, help: String) -> Setting {
        let parse: @Sendable (ConfigLayers.Sourced<[String]>) throws(ConfigurationError) -> Logger.Level = {
            given throws(ConfigurationError) in
            guard let level = Logger.Level(rawValue: given.value[0].lowercased()) else {
                let names = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
                throw ConfigurationError(
                    flag: "--\(key)", "'\(given.value[0])' is not one of \(names)", origin: given.origin)
            }
            return level
        }
        return row(
            key, path, quoted: false, reload: .live, valueName: "level", help: help, items: { [$0.rawValue] },
            parse: parse)
    }
}

extension Setting.DurationUnit {
    /// The precision the core needs, with the refusals the relay has always given.
    fileprivate func check(_ value: Duration, flag: String) throws(ConfigurationError) {
        switch self {
        case .seconds:
            if value.components.attoseconds != 0 {
                throw ConfigurationError(flag: flag, "must be a whole number of seconds")
            }
            if value.wholeSeconds > Int64(UInt32.max) { throw ConfigurationError(flag: flag, "is too large") }
        case .milliseconds:
            if value.wholeMilliseconds < 1 || value.wholeMilliseconds > Int64(UInt32.max) {
                throw ConfigurationError(flag: flag, "must be from 1ms to \(UInt32.max)ms")
            }
        case .any:
            break
        }
    }
}
