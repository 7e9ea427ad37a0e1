import Logging
import ServiceLifecycle

/// What `relay agent` needs: where the relay is, who the device is, and what to expose.
public struct AgentOptions: Sendable {
    /// Relay UDP address "HOST:PORT".
    public var relay: String
    public var deviceID: String
    /// The 64 hex digit secret from `relay device add`.
    public var secretHex: String
    /// The local web server "HOST:PORT" terminals reach through the relay.
    public var forward: String
    /// TLS on the callback: the CA that issued the relay's certificate (nil: plain TCP),
    /// the name that certificate must carry (nil: the host of `relay`), and this device's
    /// own certificate and key for relays that ask for one.
    public var tlsCA: String?
    public var tlsName: String?
    public var tlsCert: String?
    public var tlsKey: String?

    public init(
        relay: String, deviceID: String, secretHex: String, forward: String, tlsCA: String? = nil,
        tlsName: String? = nil, tlsCert: String? = nil, tlsKey: String? = nil
    ) {
        self.relay = relay
        self.deviceID = deviceID
        self.secretHex = secretHex
        self.forward = forward
        self.tlsCA = tlsCA
        self.tlsName = tlsName
        self.tlsCert = tlsCert
        self.tlsKey = tlsKey
    }
}

/// The agent loop ended without being asked to.
public struct AgentStoppedError: Error, CustomStringConvertible {
    public var description: String { "the agent loop ended unexpectedly" }
}

/// Runs the device agent until SIGTERM or SIGINT, then stops it and returns.
public func runAgent(_ options: AgentOptions, logger: Logger) async throws {
    guard RelayCrypto.isValidDeviceID(options.deviceID) else {
        throw ConfigurationError(
            flag: "--id", "'\(options.deviceID)' is not a valid device ID (1 to 63 of a-z, 0-9 and '-')")
    }
    let secret = try AgentSecret.parse(options.secretHex)
    let agent = try AgentHandle(options: options, secret: secret, logger: logger)
    let group = ServiceGroup(
        configuration: ServiceGroupConfiguration(
            services: [AgentService(agent: agent, logger: logger)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    logger.info(
        "agent.start",
        metadata: ["relay": "\(options.relay)", "device": "\(options.deviceID)", "forward": "\(options.forward)"])
    try await group.run()
}

/// The agent loop as a service: a shutdown signal stops the loop, and a loop that ends by
/// itself fails the service (so the process exits non-zero).
struct AgentService: Service {
    let agent: AgentHandle
    let logger: Logger

    func run() async throws {
        let asked = await withTaskCancellationOrGracefulShutdownHandler {
            await agent.run()
        } onCancelOrGracefulShutdown: {
            agent.stop()
        }
        let stats = agent.stats()
        logger.info(
            "agent.stop",
            metadata: [
                "notify_a_sent": "\(stats.notify_a_sent)", "notify_b_sent": "\(stats.notify_b_sent)",
                "links_opened": "\(stats.links_opened)", "links_failed": "\(stats.links_failed)",
                "acks": "\(stats.acks)",
            ])
        if !asked { throw AgentStoppedError() }
    }
}
