import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The configuration in force, shared by the services that read it after start.
final class LiveConfiguration: Sendable {
    private let value: Mutex<RelayConfiguration>

    init(_ configuration: RelayConfiguration) {
        value = Mutex(configuration)
    }

    var current: RelayConfiguration {
        get { value.withLock { $0 } }
        set { value.withLock { $0 = newValue } }
    }
}

/// SIGHUP: reads the config file and the variables again (flags still win) and applies
/// what a running relay can change: the log level, the core's timers, the limits on request
/// heads, the abuse limits, the drain timeout. Keys that need a restart are named in a warning and left as
/// they are; a configuration that does not validate changes nothing.
struct ReloadService: Service {
    let core: RelayCore
    let live: LiveConfiguration
    let reload: @Sendable () async throws -> RelayConfiguration
    let logger: Logger

    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        for await _ in hangups.cancelOnGracefulShutdown() {
            await reloadOnce()
        }
    }

    private func reloadOnce() async {
        let next: RelayConfiguration
        do {
            next = try await reload()
        } catch {
            logger.error("config.reload.failed", metadata: ["error": "\(error)", "kept": "the running configuration"])
            return
        }
        let changed = next.changedKeys(from: live.current)
        let startedPlain = live.current.tlsCerts.isEmpty
        let restartNeeded = changed.filter {
            !RelayConfiguration.reloadableKeys.contains($0) || (startedPlain && RelayConfiguration.tlsKeys.contains($0))
        }
        var applied = live.current.reloading(from: next)
        // Certificates are read again on every reload (renewed files keep their names); a
        // relay started without TLS needs a restart to get it.
        if !startedPlain && !next.tlsCerts.isEmpty {
            do {
                try core.setTLS(certs: next.tlsCerts, keys: next.tlsKeys, deviceCA: next.deviceCA)
                applied.tlsCerts = next.tlsCerts
                applied.tlsKeys = next.tlsKeys
                applied.deviceCA = next.deviceCA
            } catch {
                logger.error("config.reload.tls_failed", metadata: ["error": "\(error)", "kept": "the running certificates"])
            }
        }
        live.current = applied
        core.reconfigure(applied)
        RelayLogging.setLevel(applied.logLevel)
        logger.notice(
            "config.reloaded",
            metadata: [
                "applied": "\(changed.filter { !restartNeeded.contains($0) }.joined(separator: ","))",
                "restart_needed": "\(restartNeeded.joined(separator: ","))",
            ])
        if !restartNeeded.isEmpty {
            logger.warning(
                "config.reload.restart_needed",
                metadata: ["keys": "\(restartNeeded.joined(separator: ","))", "kept": "the running values"])
        }
    }
}
