import CRelayCore
import Logging

/// The kinds of setting, one factory each: how a text, list, count, duration or level is
/// parsed from the file or a variable, shown in YAML, range-checked and handed to the core.
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

    /// The device store: `sqlite` or a PostgreSQL URL, shown without its password (check-config
    /// prints it), checked for its form before anything is opened.
    static func store(_ key: String, _ path: Path<String>, help: String, defaultNote: String? = nil) -> Setting {
        row(key, path, quoted: true, reload: .restart, valueName: "sqlite|url", help: help, defaultNote: defaultNote,
            items: { [DeviceStore.displayName($0)] }, parse: { $0.value[0] },
            check: { value throws(ConfigurationError) in
                guard value == DeviceStore.embedded || DeviceStore.isPostgres(value) else {
                    throw ConfigurationError(
                        flag: "--\(key)", "\(DeviceStoreError.unknownStore(value))")
                }
            })
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
        valueName: String = "n", help: String, defaultNote: String? = nil, core: CoreField? = nil
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
            key, path, quoted: false, reload: reload, valueName: valueName, help: help, defaultNote: defaultNote,
            items: { ["\($0)"] }, parse: parse, check: check, toCore: toCore)
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
