import ArgumentParser
import Logging
import RelayControl

/// `relay agent`: the device side, keeping a NAT mapping to the relay open and answering wakes.
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the device agent until SIGTERM or SIGINT.",
        discussion: "Registers with the relay over UDP and, on each wake, connects the relay to --forward."
    )

    @Option(help: ArgumentHelp("The relay's UDP address.", valueName: "host:port"))
    var relay: String

    @Option(help: ArgumentHelp("This device's ID.", valueName: "id"))
    var id: String

    @Option(help: ArgumentHelp("The 64 hex digit secret `relay device add` printed.", valueName: "secret"))
    var key: String

    @Option(help: ArgumentHelp("The local web server to expose.", valueName: "host:port"))
    var forward: String

    @Option(help: ArgumentHelp("Log threshold on stderr.", valueName: "level"))
    var logLevel: Logger.Level = .info

    func validate() throws {
        do {
            _ = try AgentSecret.parse(key)
        } catch {
            throw ValidationError("\(error)")
        }
    }

    func run() async throws {
        RelayLogging.bootstrap(level: logLevel)
        let options = AgentOptions(relay: relay, deviceID: id, secretHex: key, forward: forward)
        try await runAgent(options, logger: Logger(label: "relay.agent"))
    }
}
