import Logging
import ServiceLifecycle

/// Carries store changes into the running core, so that `relay device add/remove` and
/// `relay token revoke` in another process take effect within about half a second, without
/// a restart; or at once when the CLI asks the admin API to sync (`POST /api/v1/sync`).
struct DeviceSyncService: Service {
    let sync: DeviceSync

    static let interval = Duration.milliseconds(500)

    func run() async throws {
        await poll(every: Self.interval) {
            _ = await sync.syncNow()
        }
    }
}

/// One store-to-core sync at a time: the poll and the admin API's sync requests share it.
actor DeviceSync {
    let store: DeviceStore
    let core: RelayCore
    let logger: Logger
    /// The change counter the core is in step with.
    private(set) var seq: Int64
    /// Whether the store reads are failing (logged once per change).
    private var failing = false
    /// Whether a failing store makes /readyz answer 503. A local SQLite file that cannot be
    /// read is this node's fault; a shared PostgreSQL down is every node's at once, and
    /// turning them all unready (their floating addresses with them) would only stop them
    /// serving the devices they already have.
    private let failureMakesUnready: Bool

    init(store: DeviceStore, core: RelayCore, startSeq: Int64, logger: Logger) {
        self.store = store
        self.core = core
        self.seq = startSeq
        self.logger = logger
        self.failureMakesUnready = !store.isShared
    }

    /// Applies what changed since the last sync; returns the change counter now applied.
    func syncNow() -> Int64 {
        let since = seq
        let changes: DeviceChanges
        do {
            changes = try store.changes(since: since)
        } catch {
            // A busy or briefly unreadable store is retried on the next tick; /readyz says
            // 503 meanwhile.
            core.setStoreUp(false)
            if failureMakesUnready { core.setStoreReadable(false) }
            if !failing {
                failing = true
                logger.warning("device.sync.failed", metadata: ["error": "\(error)"])
            }
            return seq
        }
        core.setStoreUp(true)
        core.setStoreReadable(true)
        if failing {
            failing = false
            logger.notice("device.sync.recovered")
        }
        guard changes.seq != since else { return seq }
        for id in changes.invalid {
            logger.error("device.put.malformed", metadata: ["device": "\(id.prefix(80))", "reason": "malformed ID or key in the store"])
        }
        // Removals first: an ID removed and added again is then left with its new key.
        for id in changes.removals {
            core.remove(id: id)
            logger.info("device.removed", metadata: ["device": "\(id)"])
        }
        for device in changes.upserts {
            if core.put(id: device.id, key: device.key) {
                logger.info("device.added", metadata: ["device": "\(device.id)"])
            } else {
                logger.warning("device.put.failed", metadata: ["device": "\(device.id)", "reason": "registry full"])
            }
        }
        for token in changes.revocations {
            core.revoke(token)
            logger.info("token.revoked", metadata: ["token": "\(token.id)"])
        }
        seq = changes.seq
        return seq
    }
}
