import Logging
import ServiceLifecycle

/// Keeps the already started core running until the group shuts down, then stops it
/// (ends sessions and joins the loop thread) before the services listed before it stop.
struct CoreService: Service {
    let core: RelayCore
    let logger: Logger

    func run() async throws {
        // Either way out (shutdown signal or cancellation) ends in a stopped core.
        try? await gracefulShutdown()
        logger.info("relay.stopping")
        core.setReady(false)
        core.stop()
        logger.info("relay.stopped")
    }
}
