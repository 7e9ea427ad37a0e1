import Logging
import ServiceLifecycle

/// Keeps the already started core running until the group shuts down; then drains it
/// (sessions in flight finish, up to the drain timeout) and stops it (ends the rest and
/// joins the loop thread) before the services listed before it stop.
struct CoreService: Service {
    let core: RelayCore
    let live: LiveConfiguration
    let logger: Logger

    static let drainPoll = Duration.milliseconds(50)

    func run() async throws {
        // Either way out (shutdown signal or cancellation) ends in a stopped core.
        try? await gracefulShutdown()
        let start = ContinuousClock.now
        let drainTimeout = live.current.drainTimeout
        core.drain()
        var stats = core.stats()
        logger.info(
            "relay.draining",
            metadata: [
                "sessions": "\(stats.sessions_active)", "terminals": "\(stats.terminals_open)",
                "timeout_ms": "\(drainTimeout.wholeMilliseconds)",
            ])
        while stats.sessions_active > 0 || stats.terminals_open > 0, ContinuousClock.now - start < drainTimeout {
            await sleepEvenIfCancelled(Self.drainPoll)
            stats = core.stats()
        }
        core.setReady(false)
        core.stop()
        logger.info(
            "relay.stopped",
            metadata: [
                "drain_ms": "\((ContinuousClock.now - start).wholeMilliseconds)",
                "sessions_cut": "\(stats.sessions_active)", "terminals_cut": "\(stats.terminals_open)",
            ])
    }
}
