import Logging
import ServiceLifecycle

/// Logs one line per finished terminal session, and the core's operator events, drained
/// from the core every 200 ms.
/// Never logs a token or secret: the core's records carry neither.
struct SessionLogService: Service {
    let core: RelayCore
    let logger: Logger

    static let interval = Duration.milliseconds(200)
    static let batch = 256

    func run() async throws {
        await poll(every: Self.interval) {
            drainAndLog()
        }
        // The core stops before this service (it is later in the group), so this last
        // drain logs the sessions that the stop ended.
        drainAndLog()
    }

    func drainAndLog() {
        for event in core.drainEvents() {
            logger.log(
                level: event.isWarning ? .warning : .notice, "\(event.name)",
                metadata: ["device": "\(event.deviceID)", "what": "\(event.detail)"])
        }
        while true {
            let records = core.drainRecords(max: Self.batch)
            for record in records { log(record) }
            if records.count < Self.batch { return }
        }
    }

    private func log(_ record: SessionRecord) {
        logger.info(
            "session.end",
            metadata: [
                "device": "\(record.deviceID)",
                "session": "\(record.sessionID)",
                "outcome": "\(record.outcome.rawValue)",
                "status": "\(record.status)",
                "duration_ms": "\(record.durationMicroseconds / 1000)",
                "bytes_to_device": "\(record.bytesToDevice)",
                "bytes_to_terminal": "\(record.bytesToTerminal)",
                "reused": "\(record.reused)",
            ])
    }
}
