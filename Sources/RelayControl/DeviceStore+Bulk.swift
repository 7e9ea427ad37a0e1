import Foundation
import GRDB

extension DeviceStore {
    /// Provisions `count` devices at once from their derived keys, in one transaction with one
    /// change-counter bump, for benchmarks and migrations: `device(i)` gives the ID and the
    /// 16-byte key K of the i-th device. The store still never sees a secret; the caller keeps
    /// (or can re-derive) them. Fails, changing nothing, when an ID is invalid or already
    /// provisioned. Returns the new change counter value.
    @discardableResult
    public func bulkAdd(
        count: Int, now: Date = Date(), device: (Int) throws -> (id: String, key: [UInt8])
    ) throws -> Int64 {
        var configuration = Configuration()
        configuration.journalMode = .wal
        configuration.busyMode = .timeout(5)
        configuration.label = "relay.devices.bulk"
        let path = databasePath
        do {
            let queue = try DatabaseQueue(path: path, configuration: configuration)
            return try queue.writeWithoutTransaction { db -> Int64 in
                var seq: Int64 = 0
                try db.inTransaction(.immediate) {
                    seq = (try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'seq'") ?? 0) + 1
                    try db.execute(sql: "UPDATE meta SET value = ? WHERE name = 'seq'", arguments: [seq])
                    let insert = try db.makeStatement(
                        sql: "INSERT INTO devices (id, key, created_at, seq) VALUES (?, ?, ?, ?)")
                    let created = now.timeIntervalSince1970
                    for index in 0..<count {
                        let (id, key) = try device(index)
                        guard RelayCrypto.isValidDeviceID(id) else { throw DeviceStoreError.invalidDeviceID(id) }
                        guard key.count == RelayCrypto.deviceKeyLength else {
                            throw CryptoError.badLength("device key", key.count, RelayCrypto.deviceKeyLength)
                        }
                        do {
                            try insert.execute(arguments: [id, Data(key), created, seq])
                        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
                            throw DeviceStoreError.deviceExists(id)
                        }
                    }
                    return .commit
                }
                return seq
            }
        } catch let error as DeviceStoreError {
            throw error
        } catch let error as CryptoError {
            throw error
        } catch let error as DatabaseError {
            throw DeviceStoreError.database(path, error.message ?? "\(error.resultCode)")
        }
    }
}
