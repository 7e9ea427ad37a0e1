import CRelayCore
import Glibc
import Logging
import ServiceLifecycle
import UnixSignals

/// A relay ready to serve: store open, listeners bound, devices and revoked tokens loaded,
/// core started.
///
/// ``make(configuration:logger:)`` does all the setup that can fail with a message, so
/// that `relay serve` exits non-zero before it claims to be ready; ``run()`` then serves
/// until SIGTERM/SIGINT (or ``shutdown()``) and returns after a clean stop.
public final class RelayServer: Sendable {
    public let configuration: RelayConfiguration
    public let listeners: BoundListeners
    public let store: DeviceStore
    let core: RelayCore
    private let group: ServiceGroup
    private let logger: Logger
    /// The admin listener's bound address, once up (nil: off).
    private let adminBinding: AdminBinding?

    private init(
        configuration: RelayConfiguration, listeners: BoundListeners, store: DeviceStore, core: RelayCore,
        group: ServiceGroup, logger: Logger, adminBinding: AdminBinding?
    ) {
        self.configuration = configuration
        self.listeners = listeners
        self.store = store
        self.core = core
        self.group = group
        self.logger = logger
        self.adminBinding = adminBinding
    }

    /// `reload` gives the configuration to apply on SIGHUP (see ``ReloadService``); without
    /// it SIGHUP is ignored.
    public static func make(
        configuration: RelayConfiguration, logger: Logger,
        reload: (@Sendable () async throws -> RelayConfiguration)? = nil
    ) throws -> RelayServer {
        try configuration.validate()
        // From here on a SIGHUP must not end the process (its default), even before the
        // reload service traps it.
        signal(SIGHUP, SIG_IGN)
        let store = try DeviceStore(directory: configuration.dataDirectory, store: configuration.store)
        let core = try RelayCore(configuration: configuration, tokenKey: store.tokenKey())
        if !configuration.tlsCerts.isEmpty {
            try core.setTLS(certs: configuration.tlsCerts, keys: configuration.tlsKeys, deviceCA: configuration.deviceCA)
        }
        let listeners = try ListenerBinder.bindAll(configuration, on: core, logger: logger)
        try core.joinCluster(configuration)

        var refused = 0
        var malformed = 0
        let loadedSeq = try store.forEachDevice(invalid: { _ in malformed += 1 }) { id, key in
            if !core.put(id: id, key: key) { refused += 1 }
        }
        if malformed > 0 {
            logger.error(
                "device.load.malformed",
                metadata: ["devices": "\(malformed)", "reason": "malformed ID or key in the store; fix or remove those rows"])
        }
        if refused > 0 {
            logger.warning(
                "device.load.refused",
                metadata: ["devices": "\(refused)", "reason": "registry full", "capacity": "\(configuration.capacity)"])
        }
        // Revoked tokens are refused from the first request on, not from the first sync.
        let revoked = try store.revokedTokens()
        for token in revoked { core.revoke(token) }
        if !revoked.isEmpty {
            logger.info("token.revocations.loaded", metadata: ["tokens": "\(revoked.count)"])
        }
        // The load's transient allocations (SQLite pages, row buffers) go back to the system,
        // so resident memory reflects the registry, not the start-up.
        releaseFreeMemory()
        try core.start()

        // Shutdown runs in reverse order: the core stops first, so the session log (first)
        // drains the records of the sessions that the stop ended.
        let live = LiveConfiguration(configuration)
        let sync = DeviceSync(store: store, core: core, startSeq: loadedSeq, logger: logger)
        var services: [any Service] = [
            SessionLogService(core: core, logger: logger),
            DeviceSyncService(sync: sync),
        ]
        if DeviceStore.isPostgres(configuration.store) {
            services.append(
                StoreChangeListener(
                    conninfo: configuration.store, name: store.databasePath, sync: sync, logger: logger))
        }
        if let reload {
            services.append(ReloadService(core: core, live: live, reload: reload, logger: logger))
        }
        services.append(CoreService(core: core, live: live, logger: logger))
        // Last, so that it stops first: no admin request reaches a stopping core.
        var adminBinding: AdminBinding? = nil
        if let admin = configuration.admin, let address = ListenAddress(admin) {
            let binding = AdminBinding()
            adminBinding = binding
            let api = AdminAPI(store: store, core: core, sync: sync, keys: AdminKeyCheck(store: store), logger: logger)
            services.append(
                AdminService(
                    api: api, address: address,
                    tls: configuration.tlsCerts.isEmpty ? nil : (configuration.tlsCerts, configuration.tlsKeys),
                    dataDirectory: configuration.dataDirectory, store: store, binding: binding, logger: logger))
        } else {
            AdminEndpoint.remove(dataDirectory: configuration.dataDirectory)
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services, logger: logger))
        return RelayServer(
            configuration: configuration, listeners: listeners, store: store, core: core, group: group,
            logger: logger, adminBinding: adminBinding)
    }

    /// Marks the relay ready, prints the relay.ready line and serves until shutdown.
    public func run() async throws {
        // SIGTERM and SIGINT are trapped before the relay says it is ready, so that a signal
        // sent the moment /healthz answers still stops it cleanly (a shutdown requested
        // before group.run() starts is remembered by the group).
        let stopSignals = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        let group = self.group
        let logger = self.logger
        let watcher = Task {
            for await signal in stopSignals {
                logger.info("relay.signal", metadata: ["signal": "\(signal)"])
                await group.triggerGracefulShutdown()
            }
        }
        defer { watcher.cancel() }
        let runner = Task { try await group.run() }
        // Ready only once the admin listener is bound and admin.json written (the CLI reads it
        // as soon as /healthz answers); a listener that cannot bind stops the relay.
        var adminAddress: String? = nil
        if let adminBinding {
            do {
                adminAddress = try await adminBinding.wait()
            } catch {
                await group.triggerGracefulShutdown()
                _ = try? await runner.value
                core.stop()
                throw error
            }
        }
        core.setReady(true)
        warnIfReceiveBufferCapped()
        if configuration.isClustered {
            logger.info(
                "cluster.joined",
                metadata: [
                    "node": "\(configuration.node)", "mesh": "\(configuration.mesh.joined(separator: ","))",
                    "peers": "\(configuration.meshPeers.joined(separator: ","))",
                    "callback_host": "\(configuration.callbackHost ?? "")",
                ])
        }
        // Scripts and the integration tests wait for this line, so it is printed at any
        // --log-level (the copy's level does not change the shared logger's).
        var readyLogger = logger
        readyLogger.logLevel = .info
        readyLogger.info("\(readyLine(admin: adminAddress))")
        try await runner.value
        core.stop()
    }

    /// A capped UDP receive buffer overflows first when many devices register at once (after
    /// a restart): the kernel drops their notifies (they retry, and count as alive at their
    /// next notify A). Said once at start, with the fix.
    private func warnIfReceiveBufferCapped() {
        let granted = core.stats().udp_rcvbuf
        let asked = UInt64(RL_UDP_RCVBUF)
        guard granted > 0, granted < asked else { return }
        logger.warning(
            "udp.receive_buffer.capped",
            metadata: [
                "granted_bytes": "\(granted)", "asked_bytes": "\(asked)",
                "fix": "sysctl -w net.core.rmem_max=\(asked)",
            ])
    }

    /// Starts a graceful shutdown, as SIGTERM would.
    public func shutdown() async {
        await group.triggerGracefulShutdown()
    }

    /// "relay.ready http=... udp=... tcp=... metrics=... data=<dir>", with the bound ports, and
    /// " https=..." at the end when TLS is on.
    /// Integration tests and operators' scripts parse this line, so its shape is fixed; it is
    /// the one log message that carries values in its text.
    public func readyLine(admin: String? = nil) -> String {
        let pairs = [ListenerKind.http, .udp, .tcp, .metrics].map { "\($0.name)=\(listeners.joined($0))" }
        let https = listeners.addresses(.https).isEmpty ? "" : " https=\(listeners.joined(.https))"
        let adminPart = admin.map { " admin=\($0)" } ?? ""
        return "relay.ready " + pairs.joined(separator: " ") + " data=\(configuration.dataDirectory)" + https + adminPart
    }
}

/// Runs the relay with `configuration` until SIGTERM or SIGINT; returns after a clean stop.
/// SIGHUP applies what `reload` returns (see ``ReloadService``).
public func runRelay(
    config configuration: RelayConfiguration, logger: Logger,
    reload: (@Sendable () async throws -> RelayConfiguration)? = nil
) async throws {
    let server = try RelayServer.make(configuration: configuration, logger: logger, reload: reload)
    try await server.run()
}
