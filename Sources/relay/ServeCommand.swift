import ArgumentParser
import Logging
import RelayControl

/// `relay serve`: flags become a ``RelayConfiguration``; everything else is in RelayControl.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the relay until SIGTERM or SIGINT.",
        discussion: """
            Listens on loopback by default (HTTP 8080, UDP 4700, TCP 4701, IPv4 and IPv6). \
            Repeat --http, --udp, --tcp or --metrics to replace that default list. \
            Once listening it logs one line: relay.ready http=... udp=... tcp=... metrics=... data=...
            """
    )

    @OptionGroup var data: DataOptions

    @Option(help: ArgumentHelp("Terminal HTTP listener; repeatable.", valueName: "addr:port"))
    var http: [String] = []

    @Option(help: ArgumentHelp("Device UDP listener; repeatable.", valueName: "addr:port"))
    var udp: [String] = []

    @Option(help: ArgumentHelp("Device TCP callback listener; repeatable.", valueName: "addr:port"))
    var tcp: [String] = []

    @Option(help: ArgumentHelp("Prometheus /metrics listener; repeatable (default: none).", valueName: "addr:port"))
    var metrics: [String] = []

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

    @Option(help: ArgumentHelp("Log threshold on stderr.", valueName: "level"))
    var logLevel: Logger.Level = .info

    func validate() throws {
        do {
            try makeConfiguration().validate()
        } catch {
            throw ValidationError("\(error)")
        }
    }

    func run() async throws {
        let configuration = makeConfiguration()
        RelayLogging.bootstrap(level: configuration.logLevel)
        try await runRelay(config: configuration, logger: Logger(label: "relay"))
    }

    /// The defaults with every given flag applied; a repeated listener flag replaces its list.
    func makeConfiguration() -> RelayConfiguration {
        var configuration = RelayConfiguration()
        configuration.dataDirectory = data.resolved
        if !http.isEmpty { configuration.http = http }
        if !udp.isEmpty { configuration.udp = udp }
        if !tcp.isEmpty { configuration.tcp = tcp }
        if !metrics.isEmpty { configuration.metrics = metrics }
        if let domain { configuration.domain = domain }
        if let period { configuration.period = period }
        configuration.keepalive = keepalive ?? RelayConfiguration.defaultKeepalive(period: configuration.period)
        if let capacity { configuration.capacity = capacity }
        if let maxSessions { configuration.maxSessions = maxSessions }
        if let wakeTimeout { configuration.wakeTimeout = wakeTimeout }
        if let idleLink { configuration.idleLink = idleLink }
        if let maxHeaderBytes { configuration.maxHeaderBytes = maxHeaderBytes }
        if let headerTimeout { configuration.headerTimeout = headerTimeout }
        configuration.logLevel = logLevel
        return configuration
    }
}

/// Flag values like "30s" or "24h"; a bare number is seconds.
@Sendable func parseDuration(_ text: String) throws -> Duration {
    try Durations.parse(text)
}
