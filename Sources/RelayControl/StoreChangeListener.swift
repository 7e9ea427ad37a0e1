import CLibPQ
import Foundation
import Glibc
import Logging
import ServiceLifecycle

/// Syncs the moment a change to a PostgreSQL store commits, on any node or from any CLI:
/// every write sends `NOTIFY relay_changes` (``DeviceStore/bumpSeq(_:)``), and this service
/// holds its own connection in `LISTEN`. The 500 ms poll of ``DeviceSyncService`` stays as
/// the fallback; a lost connection is re-opened with a growing pause (at most 5 s), and the
/// first sync after it catches up on whatever was missed meanwhile.
struct StoreChangeListener: Service {
    let conninfo: String
    let name: String
    let sync: DeviceSync
    let logger: Logger

    func run() async throws {
        let stop = StopFlag()
        let conninfo = self.conninfo
        let name = self.name
        let sync = self.sync
        let logger = self.logger
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            Self.listen(conninfo, name: name, stop: stop, logger: logger) {
                Task { _ = await sync.syncNow() }
            }
            done.signal()
        }
        thread.name = "relay-store-listen"
        thread.start()
        try? await gracefulShutdown()
        stop.set()
        // The thread looks at the flag at least every 250 ms (a connect: at most 5 s).
        _ = done.wait(timeout: .now() + 6)
    }

    /// The thread's loop: connect, LISTEN, wait on the socket, call `changed` per burst.
    private static func listen(
        _ conninfo: String, name: String, stop: StopFlag, logger: Logger, changed: @escaping () -> Void
    ) {
        var conn: OpaquePointer? = nil
        var pause = 0.1
        var failing = false
        defer { if let conn { PQfinish(conn) } }
        while !stop.isSet {
            if conn == nil {
                do {
                    let opened = try PostgresConnection.connect(conninfo)
                    conn = opened
                    PQclear(try PostgresConnection.exec(opened, "LISTEN " + PostgresStoreBackend.channel, []))
                    pause = 0.1
                    if failing { logger.notice("store.listen.recovered", metadata: ["store": "\(name)"]) }
                    failing = false
                    changed()  // whatever committed while we were not listening
                } catch {
                    if let opened = conn { PQfinish(opened) }
                    conn = nil
                    if !failing {
                        logger.warning(
                            "store.listen.failed",
                            metadata: ["store": "\(name)", "error": "\((error as? StoreFailure)?.message ?? "\(error)")"])
                    }
                    failing = true
                    stop.sleep(pause)
                    pause = min(pause * 2, 5)
                    continue
                }
            }
            guard let open = conn else { continue }
            var descriptor = pollfd(fd: PQsocket(open), events: Int16(POLLIN), revents: 0)
            let ready = Glibc.poll(&descriptor, 1, 250)
            if ready <= 0 { continue }
            guard PQconsumeInput(open) != 0, PQstatus(open) == CONNECTION_OK else {
                logger.warning("store.listen.lost", metadata: ["store": "\(name)", "error": "\(PostgresConnection.errorMessage(open))"])
                PQfinish(open)
                conn = nil
                failing = true
                continue
            }
            var notified = false
            while let notification = PQnotifies(open) {
                notified = true
                PQfreemem(notification)
            }
            if notified { changed() }
        }
    }
}

/// A flag the listener thread checks, and a sleep that ends early when it is set.
final class StopFlag: @unchecked Sendable {
    private let condition = NSCondition()
    private var value = false

    var isSet: Bool {
        condition.lock()
        defer { condition.unlock() }
        return value
    }

    func set() {
        condition.lock()
        value = true
        condition.broadcast()
        condition.unlock()
    }

    func sleep(_ seconds: Double) {
        condition.lock()
        if !value { _ = condition.wait(until: Date(timeIntervalSinceNow: seconds)) }
        condition.unlock()
    }
}
