import ArgumentParser
import Foundation
import Logging
import RelayControl

/// The settings of `relay serve`, shared with `relay check-config`. Every flag is optional:
/// a flag given wins over `RELAY_*` variables, which win over `--config`, over the defaults.
struct ServeOptions: ParsableArguments {
    @Option(help: ArgumentHelp("YAML config file; keys are these flags' names (see packaging/relay.yaml).", valueName: "file"))
    var config: String?

    @OptionGroup var data: DataOptions

    // Each flag's help and default come from its row in RelayConfiguration.settingsTable.
    @Option(help: settingHelp(\.http))
    var http: [String] = []

    @Option(help: settingHelp(\.udp))
    var udp: [String] = []

    @Option(help: settingHelp(\.tcp))
    var tcp: [String] = []

    @Option(help: settingHelp(\.metrics))
    var metrics: [String] = []

    @Option(help: settingHelp(\.floating))
    var floating: [String] = []

    @Option(help: settingHelp(\.node))
    var node: Int?

    @Option(help: settingHelp(\.mesh))
    var mesh: [String] = []

    @Option(name: .customLong("mesh-peer"), help: settingHelp(\.meshPeers))
    var meshPeers: [String] = []

    @Option(name: .customLong("mesh-key-file"), help: settingHelp(\.meshKeyFile))
    var meshKeyFile: String?

    @Option(name: .customLong("callback-host"), help: settingHelp(\.callbackHost))
    var callbackHost: String?

    @Option(help: settingHelp(\.admin))
    var admin: String?

    @Option(help: settingHelp(\.https))
    var https: [String] = []

    @Option(help: settingHelp(\.tlsCerts))
    var tlsCert: [String] = []

    @Option(help: settingHelp(\.tlsKeys))
    var tlsKey: [String] = []

    @Option(help: settingHelp(\.deviceCA))
    var deviceCa: String?

    @Option(help: settingHelp(\.domain))
    var domain: String?

    @Option(help: settingHelp(\.period), transform: parseDuration)
    var period: Duration?

    @Option(help: settingHelp(\.keepalive), transform: parseDuration)
    var keepalive: Duration?

    @Option(help: settingHelp(\.threads))
    var threads: Int?

    @Option(help: settingHelp(\.capacity))
    var capacity: Int?

    @Option(help: settingHelp(\.maxSessions))
    var maxSessions: Int?

    @Option(help: settingHelp(\.wakeTimeout), transform: parseDuration)
    var wakeTimeout: Duration?

    @Option(help: settingHelp(\.idleLink), transform: parseDuration)
    var idleLink: Duration?

    @Option(help: settingHelp(\.maxHeaderBytes))
    var maxHeaderBytes: Int?

    @Option(help: settingHelp(\.headerTimeout), transform: parseDuration)
    var headerTimeout: Duration?

    @Option(help: settingHelp(\.maxConnsPerSource))
    var maxConnsPerSource: Int?

    @Option(help: settingHelp(\.connRatePerSource))
    var connRatePerSource: Int?

    @Option(help: settingHelp(\.maxCallbacksPerSource))
    var maxCallbacksPerSource: Int?

    @Option(help: settingHelp(\.maxSessionsPerDevice))
    var maxSessionsPerDevice: Int?

    @Option(help: settingHelp(\.wakesPerDeviceMinute))
    var wakesPerDeviceMinute: Int?

    @Option(help: settingHelp(\.idleTimeout), transform: parseDuration)
    var idleTimeout: Duration?

    @Option(help: settingHelp(\.drainTimeout), transform: parseDuration)
    var drainTimeout: Duration?

    @Option(help: settingHelp(\.logLevel))
    var logLevel: Logger.Level?

    /// The file and the variables, read anew (SIGHUP calls this again).
    func loadLayers() async throws(ConfigurationError) -> ConfigLayers {
        try await ConfigLayers.load(
            file: config, schema: RelayConfiguration.schema, environmentPrefix: RelayConfiguration.environmentPrefix)
    }

    /// Defaults, then `layers`, then every flag given; a repeated listener flag replaces its list.
    func makeConfiguration(layers: ConfigLayers) throws(ConfigurationError) -> RelayConfiguration {
        var c = try RelayConfiguration(layers: layers)
        func flag<Value>(_ value: Value?, _ path: WritableKeyPath<RelayConfiguration, Value>) {
            flag(value, path) { $0 }
        }
        func flag<Given, Value>(
            _ value: Given?, _ path: WritableKeyPath<RelayConfiguration, Value>, _ convert: (Given) -> Value
        ) {
            guard let value else { return }
            c[keyPath: path] = convert(value)
            c.origins[RelayConfiguration.setting(path).key] = RelayConfiguration.setting(path).flag
        }
        func given(_ list: [String]) -> [String]? { list.isEmpty ? nil : list }
        flag(data.directory, \.dataDirectory)
        flag(data.store, \.store)
        flag(given(http), \.http)
        flag(given(udp), \.udp)
        flag(given(tcp), \.tcp)
        flag(given(metrics), \.metrics)
        flag(given(floating), \.floating)
        flag(node, \.node)
        flag(given(mesh), \.mesh)
        flag(given(meshPeers), \.meshPeers)
        flag(meshKeyFile, \.meshKeyFile) { $0 }
        flag(callbackHost, \.callbackHost) { $0 }
        flag(given(https), \.https) { $0 }
        flag(admin, \.admin, RelayConfiguration.adminValue)
        flag(given(tlsCert), \.tlsCerts)
        flag(given(tlsKey), \.tlsKeys)
        flag(deviceCa, \.deviceCA) { $0 }
        flag(domain, \.domain)
        flag(period, \.period)
        flag(keepalive, \.keepalive)
        if c.origins["keepalive"] == nil { c.keepalive = RelayConfiguration.defaultKeepalive(period: c.period) }
        flag(threads, \.threads)
        flag(capacity, \.capacity)
        flag(maxSessions, \.maxSessions)
        flag(wakeTimeout, \.wakeTimeout)
        flag(idleLink, \.idleLink)
        flag(maxHeaderBytes, \.maxHeaderBytes)
        flag(headerTimeout, \.headerTimeout)
        flag(maxConnsPerSource, \.maxConnsPerSource)
        flag(connRatePerSource, \.connRatePerSource)
        flag(maxCallbacksPerSource, \.maxCallbacksPerSource)
        flag(maxSessionsPerDevice, \.maxSessionsPerDevice)
        flag(wakesPerDeviceMinute, \.wakesPerDeviceMinute)
        flag(idleTimeout, \.idleTimeout)
        flag(drainTimeout, \.drainTimeout)
        flag(logLevel, \.logLevel)
        return c
    }

    /// The effective, validated configuration.
    func resolve() async throws(ConfigurationError) -> RelayConfiguration {
        let configuration = try makeConfiguration(layers: try await loadLayers())
        try configuration.validate()
        return configuration
    }
}

/// A flag's help from its setting's row: the sentence, then the default.
func settingHelp(_ path: PartialKeyPath<RelayConfiguration>) -> ArgumentHelp {
    let setting = RelayConfiguration.setting(path)
    return ArgumentHelp(setting.helpWithDefault, valueName: setting.valueName)
}

/// Flag values like "30s" or "24h"; a bare number is seconds.
@Sendable func parseDuration(_ text: String) throws -> Duration {
    try Durations.parse(text)
}

/// A configuration problem, said on one line (no usage text: the flags were fine) with
/// exit status 64, as argument errors have.
func configurationFailure(_ error: any Error) -> ExitCode {
    FileHandle.standardError.write(Data("Error: \(error)\n".utf8))
    return ExitCode.validationFailure
}
