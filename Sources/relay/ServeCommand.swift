import ArgumentParser
import Glibc
import Logging
import RelayControl

/// `relay serve`: options become a ``RelayConfiguration``; everything else is in RelayControl.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the relay until SIGTERM or SIGINT; SIGHUP reloads the config file.",
        discussion: """
            Listens on loopback by default (HTTP 8080, UDP 4700, TCP 4701, IPv4 and IPv6). \
            Repeat --http, --udp, --tcp or --metrics to replace that default list. \
            Settings come from the flags, then RELAY_<KEY> variables (RELAY_MAX_SESSIONS, lists \
            comma-separated), then --config, then the defaults. \
            Once listening it logs one line: relay.ready http=... udp=... tcp=... metrics=... data=...
            """
    )

    @OptionGroup var options: ServeOptions

    func run() async throws {
        // SIGHUP means "reload" to a relay: it must not end the process (its default action)
        // while the configuration is read and the store opened, before it is trapped.
        signal(SIGHUP, SIG_IGN)
        let configuration: RelayConfiguration
        do {
            configuration = try await options.resolve()
        } catch {
            throw configurationFailure(error)
        }
        RelayLogging.bootstrap(level: configuration.logLevel)
        let options = self.options
        try await runRelay(
            config: configuration, logger: Logger(label: "relay"),
            reload: { try await options.resolve() })
    }
}
