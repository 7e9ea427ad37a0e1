import ArgumentParser
import Foundation
import Logging
import RelayControl

/// `relay agent`: the device side, keeping a NAT mapping to the relay open and answering wakes.
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the device agent until SIGTERM or SIGINT.",
        discussion: """
            Registers with the relay over UDP and, on each wake, connects the relay to --forward. \
            Settings come from the flags, then RELAY_AGENT_<KEY> variables, then --config (YAML, \
            keys named as the flags: relay, id, key-file, forward, log-level).
            """
    )

    @Option(help: ArgumentHelp("YAML config file (see packaging/agent.yaml).", valueName: "file"))
    var config: String?

    @Option(help: ArgumentHelp("The relay's UDP address.", valueName: "host:port"))
    var relay: String?

    @Option(help: ArgumentHelp("This device's ID.", valueName: "id"))
    var id: String?

    @Option(help: ArgumentHelp("The 64 hex digit secret `relay device add` printed.", valueName: "secret"))
    var key: String?

    @Option(help: ArgumentHelp("A file (mode 600) holding the secret, instead of --key.", valueName: "file"))
    var keyFile: String?

    @Option(help: ArgumentHelp("The local web server to expose.", valueName: "host:port"))
    var forward: String?

    @Option(help: ArgumentHelp("Call back over TLS, verifying the relay against this CA (PEM).", valueName: "file"))
    var ca: String?

    @Option(help: ArgumentHelp("The name the relay's certificate must carry (default: the host of --relay).", valueName: "name"))
    var tlsName: String?

    @Option(help: ArgumentHelp("This device's certificate, for relays that ask for one (with --tls-key).", valueName: "file"))
    var tlsCert: String?

    @Option(help: ArgumentHelp("The private key of --tls-cert.", valueName: "file"))
    var tlsKey: String?

    @Option(help: ArgumentHelp("Log threshold on stderr. (default: info)", valueName: "level"))
    var logLevel: Logger.Level?

    func run() async throws {
        let options: AgentOptions
        let level: Logger.Level
        do {
            (options, level) = try await resolve()
        } catch {
            throw configurationFailure(error)
        }
        RelayLogging.bootstrap(level: level)
        try await runAgent(options, logger: Logger(label: "relay.agent"))
    }

    /// Flags over RELAY_AGENT_* over the file; every required setting present and valid.
    private func resolve() async throws -> (AgentOptions, Logger.Level) {
        let layers = try await ConfigLayers.load(
            file: config, schema: AgentOptions.schema, environmentPrefix: AgentOptions.environmentPrefix)
        func setting(_ flagValue: String?, _ key: String) throws(ConfigurationError) -> String {
            if let flagValue { return flagValue }
            if let layered = layers.string(key) { return layered.value }
            throw ConfigurationError(
                flag: "--\(key)", "missing: give --\(key), \(layers.variableName(key)) or '\(key)' in a --config file")
        }
        // Flags first (either of the two), then a variable or the file (either of the two).
        let secretHex: String
        var keyOrigin: String? = nil
        if key != nil || keyFile != nil {
            secretHex = try AgentOptions.secret(key: key, keyFile: keyFile)
        } else {
            let layeredKey = layers.string("key"), layeredFile = layers.string("key-file")
            keyOrigin = layeredKey?.origin
            if let layeredKey, layeredKey.origin == layers.filePath, let path = layers.filePath {
                // The secret itself is in the config file: keep that file private too.
                try AgentOptions.requirePrivate(path, flag: "--config", origin: nil)
            }
            secretHex = try AgentOptions.secret(
                key: layeredKey?.value, keyFile: layeredFile?.value, origin: layeredFile?.origin)
        }
        do {
            _ = try AgentSecret.parse(secretHex)
        } catch {
            throw ConfigurationError(flag: "--key", "\(error.reason)", origin: keyOrigin)
        }
        func optional(_ flagValue: String?, _ key: String) -> String? { flagValue ?? layers.string(key)?.value }
        let options = AgentOptions(
            relay: try setting(relay, "relay"), deviceID: try setting(id, "id"), secretHex: secretHex,
            forward: try setting(forward, "forward"), tlsCA: optional(ca, "ca"), tlsName: optional(tlsName, "tls-name"),
            tlsCert: optional(tlsCert, "tls-cert"), tlsKey: optional(tlsKey, "tls-key"))
        if (options.tlsCert == nil) != (options.tlsKey == nil) {
            throw ConfigurationError(flag: "--tls-cert", "give the certificate and its key together (--tls-cert, --tls-key)")
        }
        if options.tlsCert != nil && options.tlsCA == nil {
            throw ConfigurationError(flag: "--ca", "a device certificate is only sent over TLS: give --ca too")
        }
        if let tlsKey = options.tlsKey {
            try AgentOptions.requirePrivate(tlsKey, flag: "--tls-key", origin: tlsKey == self.tlsKey ? nil : layers.string("tls-key")?.origin)
        }
        var level = logLevel ?? .info
        if logLevel == nil, let text = layers.string("log-level") {
            guard let parsed = Logger.Level(rawValue: text.value.lowercased()) else {
                throw ConfigurationError(flag: "--log-level", "'\(text.value)' is not a log level", origin: text.origin)
            }
            level = parsed
        }
        return (options, level)
    }
}
