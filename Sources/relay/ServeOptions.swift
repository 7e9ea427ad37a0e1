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

    @Option(help: ArgumentHelp("Terminal HTTP listener; repeatable.", valueName: "addr:port"))
    var http: [String] = []

    @Option(help: ArgumentHelp("Device UDP listener; repeatable.", valueName: "addr:port"))
    var udp: [String] = []

    @Option(help: ArgumentHelp("Device TCP callback listener; repeatable.", valueName: "addr:port"))
    var tcp: [String] = []

    @Option(help: ArgumentHelp("Prometheus /metrics listener; repeatable (default: none).", valueName: "addr:port"))
    var metrics: [String] = []

    @Option(help: ArgumentHelp("Admin API and console listener, or off. (default: 127.0.0.1:0, the port written to <data>/admin.json)", valueName: "addr:port"))
    var admin: String?

    @Option(help: ArgumentHelp("Terminal HTTPS listener; repeatable (default with a certificate: 127.0.0.1:8443, [::1]:8443).", valueName: "addr:port"))
    var https: [String] = []

    @Option(help: ArgumentHelp("TLS certificate chain (PEM); repeatable, SNI picks by name. Turns TLS on for both legs.", valueName: "file"))
    var tlsCert: [String] = []

    @Option(help: ArgumentHelp("The private key of each --tls-cert, in the same order.", valueName: "file"))
    var tlsKey: [String] = []

    @Option(help: ArgumentHelp("CA whose certificates devices must present for their ID (default: none asked).", valueName: "file"))
    var deviceCa: String?

    @Option(help: ArgumentHelp("Host routing serves <id>.<domain>; \"\" turns it off. (default: localhost)", valueName: "name"))
    var domain: String?

    @Option(
        help: ArgumentHelp("Max access period: a device silent this long is offline. (default: 300)", valueName: "seconds"),
        transform: parseDuration)
    var period: Duration?

    @Option(
        help: ArgumentHelp("Keepalive interval told to agents; below --period. (default: 25, or half of --period when shorter)", valueName: "seconds"),
        transform: parseDuration)
    var keepalive: Duration?

    @Option(help: ArgumentHelp("Registry size in devices. (default: 1000000)", valueName: "n"))
    var capacity: Int?

    @Option(help: ArgumentHelp("Concurrent terminal sessions. (default: 65536)", valueName: "n"))
    var maxSessions: Int?

    @Option(
        help: ArgumentHelp("504 when a device has not called back within this. (default: 5s)", valueName: "duration"),
        transform: parseDuration)
    var wakeTimeout: Duration?

    @Option(
        help: ArgumentHelp("Keep an idle device link this long for reuse. (default: 60s)", valueName: "duration"),
        transform: parseDuration)
    var idleLink: Duration?

    @Option(help: ArgumentHelp("Largest terminal request head (431 above). (default: 16384)", valueName: "bytes"))
    var maxHeaderBytes: Int?

    @Option(
        help: ArgumentHelp("408 when a request head takes longer. (default: 10s)", valueName: "duration"),
        transform: parseDuration)
    var headerTimeout: Duration?

    @Option(help: ArgumentHelp("Open terminal connections from one address; 0: no limit. (default: 1024)", valueName: "n"))
    var maxConnsPerSource: Int?

    @Option(help: ArgumentHelp("New terminal connections per second from one address; 0: no limit. (default: 200)", valueName: "n"))
    var connRatePerSource: Int?

    @Option(help: ArgumentHelp("Device callbacks from one address not past their hello; 0: no limit. (default: 64)", valueName: "n"))
    var maxCallbacksPerSource: Int?

    @Option(help: ArgumentHelp("Sessions of one device; 0: no limit. (default: 64)", valueName: "n"))
    var maxSessionsPerDevice: Int?

    @Option(help: ArgumentHelp("Wakes of one device per minute; 0: no limit. (default: 600)", valueName: "n"))
    var wakesPerDeviceMinute: Int?

    @Option(
        help: ArgumentHelp("Close a bound terminal silent both ways this long; 0: never. (default: 300s)", valueName: "duration"),
        transform: parseDuration)
    var idleTimeout: Duration?

    @Option(
        help: ArgumentHelp("On SIGTERM, let sessions in flight finish for this long. (default: 30s)", valueName: "duration"),
        transform: parseDuration)
    var drainTimeout: Duration?

    @Option(help: ArgumentHelp("Log threshold on stderr. (default: info)", valueName: "level"))
    var logLevel: Logger.Level?

    /// The file and the variables, read anew (SIGHUP calls this again).
    func loadLayers() async throws(ConfigurationError) -> ConfigLayers {
        try await ConfigLayers.load(
            file: config, schema: RelayConfiguration.schema, environmentPrefix: RelayConfiguration.environmentPrefix)
    }

    /// Defaults, then `layers`, then every flag given; a repeated listener flag replaces its list.
    func makeConfiguration(layers: ConfigLayers) throws(ConfigurationError) -> RelayConfiguration {
        var c = try RelayConfiguration(layers: layers)
        func flag<T>(_ value: T?, _ key: String, _ set: (inout RelayConfiguration, T) -> Void) {
            guard let value else { return }
            set(&c, value)
            c.origins[key] = "--\(key)"
        }
        flag(data.directory, "data") { $0.dataDirectory = $1 }
        flag(http.isEmpty ? nil : http, "http") { $0.http = $1 }
        flag(udp.isEmpty ? nil : udp, "udp") { $0.udp = $1 }
        flag(tcp.isEmpty ? nil : tcp, "tcp") { $0.tcp = $1 }
        flag(metrics.isEmpty ? nil : metrics, "metrics") { $0.metrics = $1 }
        flag(https.isEmpty ? nil : https, "https") { $0.https = $1 }
        flag(admin, "admin") { $0.admin = RelayConfiguration.adminValue($1) }
        flag(tlsCert.isEmpty ? nil : tlsCert, "tls-cert") { $0.tlsCerts = $1 }
        flag(tlsKey.isEmpty ? nil : tlsKey, "tls-key") { $0.tlsKeys = $1 }
        flag(deviceCa, "device-ca") { $0.deviceCA = $1 }
        flag(domain, "domain") { $0.domain = $1 }
        flag(period, "period") { $0.period = $1 }
        flag(keepalive, "keepalive") { $0.keepalive = $1 }
        if c.origins["keepalive"] == nil { c.keepalive = RelayConfiguration.defaultKeepalive(period: c.period) }
        flag(capacity, "capacity") { $0.capacity = $1 }
        flag(maxSessions, "max-sessions") { $0.maxSessions = $1 }
        flag(wakeTimeout, "wake-timeout") { $0.wakeTimeout = $1 }
        flag(idleLink, "idle-link") { $0.idleLink = $1 }
        flag(maxHeaderBytes, "max-header-bytes") { $0.maxHeaderBytes = $1 }
        flag(headerTimeout, "header-timeout") { $0.headerTimeout = $1 }
        flag(maxConnsPerSource, "max-conns-per-source") { $0.maxConnsPerSource = $1 }
        flag(connRatePerSource, "conn-rate-per-source") { $0.connRatePerSource = $1 }
        flag(maxCallbacksPerSource, "max-callbacks-per-source") { $0.maxCallbacksPerSource = $1 }
        flag(maxSessionsPerDevice, "max-sessions-per-device") { $0.maxSessionsPerDevice = $1 }
        flag(wakesPerDeviceMinute, "wakes-per-device-minute") { $0.wakesPerDeviceMinute = $1 }
        flag(idleTimeout, "idle-timeout") { $0.idleTimeout = $1 }
        flag(drainTimeout, "drain-timeout") { $0.drainTimeout = $1 }
        flag(logLevel, "log-level") { $0.logLevel = $1 }
        return c
    }

    /// The effective, validated configuration.
    func resolve() async throws(ConfigurationError) -> RelayConfiguration {
        let configuration = try makeConfiguration(layers: try await loadLayers())
        try configuration.validate()
        return configuration
    }
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
