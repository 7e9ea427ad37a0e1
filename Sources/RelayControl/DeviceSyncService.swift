import Logging
import ServiceLifecycle

/// Carries store changes into the running core, so that `relay device add/remove` and
/// `relay token revoke` in another process take effect within about half a second, without
/// a restart.
struct DeviceSyncService: Service {
    let store: DeviceStore
    let core: RelayCore
    /// The change counter the core is already in step with (the initial load's).
    let startSeq: Int64
    let logger: Logger

    static let interval = Duration.milliseconds(500)

    func run() async throws {
        let cursor = SyncCursor(startSeq)
        await poll(every: Self.interval) {
            await syncOnce(cursor)
        }
    }

    private func syncOnce(_ cursor: SyncCursor) async {
        let since = await cursor.seq
        let changes: DeviceChanges
        do {
            changes = try store.changes(since: since)
        } catch {
            // A busy or briefly unreadable store is retried on the next tick; /readyz says
            // 503 meanwhile.
            core.setStoreReadable(false)
            if await cursor.setFailing(true) {
                logger.warning("device.sync.failed", metadata: ["error": "\(error)"])
            }
            return
        }
        core.setStoreReadable(true)
        if await cursor.setFailing(false) {
            logger.notice("device.sync.recovered")
        }
        guard changes.seq != since else { return }
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
        await cursor.advance(to: changes.seq)
    }
}

/// The last change counter value applied; an actor because the polling closure is Sendable.
actor SyncCursor {
    private(set) var seq: Int64

    init(_ seq: Int64) { self.seq = seq }

    func advance(to seq: Int64) { self.seq = seq }

    /// Whether the store reads are failing; true when that changed (logged once per change).
    private var failing = false
    func setFailing(_ now: Bool) -> Bool {
        defer { failing = now }
        return failing != now
    }
}
