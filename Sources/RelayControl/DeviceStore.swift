import Foundation
import GRDB

/// One device as `relay device list` shows it.
public struct DeviceSummary: Equatable, Sendable {
    public let id: String
    public let createdAt: Date
}

/// What changed in the store after a given change counter value: devices to put into the
/// core (with their derived keys), IDs to remove from it, and tokens it must refuse.
public struct DeviceChanges: Sendable {
    public let seq: Int64
    public let upserts: [(id: String, key: [UInt8])]
    public let removals: [String]
    /// Tokens revoked since, that have not expired yet.
    public let revocations: [RevokedToken]
}

/// The provisioned devices, the tokens minted for them and the relay's token key, in SQLite
/// at `<data>/relay.sqlite`.
///
/// The relay and the CLI open the same file from different processes: WAL lets the running
/// relay read while `relay device add` writes, and the `seq` change counter in `meta` lets
/// the relay pick up only what changed since its last look.
public final class DeviceStore: Sendable {
    public static let fileName = "relay.sqlite"

    public let databasePath: String
    private let queue: DatabaseQueue

    /// Opens the store in `directory`. When `createIfMissing` is false a missing store is an
    /// error rather than a new empty one, so that a mistyped --data does not look like an
    /// empty relay.
    public init(directory: String, createIfMissing: Bool = true) throws {
        databasePath = (directory as NSString).appendingPathComponent(Self.fileName)
        if !createIfMissing, !FileManager.default.fileExists(atPath: databasePath) {
            throw DeviceStoreError.storeMissing(databasePath)
        }
        try DataDirectory.prepare(directory)
        try DataDirectory.prepareSecretFile(databasePath)

        var configuration = Configuration()
        configuration.journalMode = .wal
        // The relay polls while the CLI writes: wait for the other process's lock briefly.
        configuration.busyMode = .timeout(5)
        configuration.label = "relay.devices"
        let path = databasePath
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration)
            try DeviceStoreSchema.migrator().migrate(queue)
            try Self.writeImmediate(queue, path) { db in try Self.initializeMeta(db) }
        } catch let error as DeviceStoreError {
            throw error
        } catch {
            throw Self.mapped(error, path)
        }
    }

    // MARK: devices

    /// Provisions `id` and returns its new 32-byte secret, which is shown once and never
    /// stored: only K = rl_derive_device_key(secret) is kept.
    public func add(id: String, now: Date = Date()) throws -> [UInt8] {
        guard RelayCrypto.isValidDeviceID(id) else { throw DeviceStoreError.invalidDeviceID(id) }
        let secret = try RelayCrypto.randomBytes(RelayCrypto.secretLength)
        let key = try RelayCrypto.deviceKey(secret: secret)
        try write { db in
            if try Self.exists(db, id) { throw DeviceStoreError.deviceExists(id) }
            let seq = try Self.bumpSeq(db)
            try db.execute(
                sql: "INSERT INTO devices (id, key, created_at, seq) VALUES (?, ?, ?, ?)",
                arguments: [id, Data(key), now.timeIntervalSince1970, seq])
        }
        return secret
    }

    /// Deprovisions `id`; a running relay drops it on its next sync. Its token records go too:
    /// those tokens can never verify again, even if the ID is added back (new secret, new key).
    public func remove(id: String) throws {
        try write { db in
            guard try Self.exists(db, id) else { throw DeviceStoreError.noSuchDevice(id) }
            let seq = try Self.bumpSeq(db)
            try db.execute(sql: "DELETE FROM devices WHERE id = ?", arguments: [id])
            try db.execute(sql: "INSERT INTO removals (id, seq) VALUES (?, ?)", arguments: [id, seq])
            try db.execute(sql: "DELETE FROM tokens WHERE device = ?", arguments: [id])
        }
    }

    /// Every device, ordered by ID.
    public func list() throws -> [DeviceSummary] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT id, created_at FROM devices ORDER BY id").map { row in
                DeviceSummary(id: row["id"], createdAt: Date(timeIntervalSince1970: row["created_at"] ?? 0))
            }
        }
    }

    /// The derived key K of `id`.
    public func key(for id: String) throws -> [UInt8] {
        let path = databasePath
        return try read { db in
            guard let data = try Data.fetchOne(db, sql: "SELECT key FROM devices WHERE id = ?", arguments: [id])
            else { throw DeviceStoreError.noSuchDevice(id) }
            guard data.count == RelayCrypto.deviceKeyLength else {
                throw DeviceStoreError.corrupt(path, "the key of device '\(id)' is \(data.count) bytes")
            }
            return [UInt8](data)
        }
    }

    // MARK: relay-wide state

    /// The 32-byte key terminal tokens are signed with, made on the store's first open.
    public func tokenKey() throws -> [UInt8] {
        let path = databasePath
        return try read { db in
            guard let data = try Data.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'token_key'"),
                data.count == RelayCrypto.tokenKeyLength
            else { throw DeviceStoreError.corrupt(path, "the token key is missing or has the wrong length") }
            return [UInt8](data)
        }
    }

    /// The change counter: it grows with every add, remove and token revocation.
    public func currentSeq() throws -> Int64 {
        try read { db in try Self.seq(db) }
    }

    /// Everything that changed after `seq`; `changes(since: 0)` is every device. An ID that
    /// was removed and then added again appears only as an upsert, with its new key. Tokens
    /// already expired at `now` are left out of the revocations: they are refused anyway.
    public func changes(since seq: Int64, now: Date = Date()) throws -> DeviceChanges {
        try read { db in
            let current = try Self.seq(db)
            let upserts = try Row.fetchAll(
                db, sql: "SELECT id, key FROM devices WHERE seq > ? ORDER BY seq", arguments: [seq]
            ).map { row -> (id: String, key: [UInt8]) in
                let key: Data = row["key"]
                return (row["id"], [UInt8](key))
            }
            let removals = try String.fetchAll(
                db,
                sql: """
                    SELECT DISTINCT id FROM removals
                    WHERE seq > ? AND id NOT IN (SELECT id FROM devices)
                    ORDER BY id
                    """,
                arguments: [seq])
            let revocations = try Self.revocations(db, since: seq, now: now)
            return DeviceChanges(seq: current, upserts: upserts, removals: removals, revocations: revocations)
        }
    }

    /// Calls `body` for every device, streaming rows from SQLite without building a list
    /// (a million devices must not cost a million Swift values at start), and returns the
    /// change counter the pass is consistent with.
    public func forEachDevice(_ body: (_ id: String, _ key: UnsafeRawBufferPointer) -> Void) throws -> Int64 {
        try read { db in
            let now = try Self.seq(db)
            let rows = try Row.fetchCursor(db, sql: "SELECT id, key FROM devices")
            while let row = try rows.next() {
                let id: String = row["id"]
                let key: Data = row["key"]
                key.withUnsafeBytes { body(id, $0) }
            }
            return now
        }
    }

    // MARK: plumbing

    func read<T>(_ body: (Database) throws -> T) throws -> T {
        do {
            return try queue.read(body)
        } catch let error as DeviceStoreError {
            throw error
        } catch {
            throw Self.mapped(error, databasePath)
        }
    }

    func write(_ body: (Database) throws -> Void) throws {
        do {
            try Self.writeImmediate(queue, databasePath, body)
        } catch let error as DeviceStoreError {
            throw error
        } catch {
            throw Self.mapped(error, databasePath)
        }
    }

    /// IMMEDIATE takes the write lock up front, so two processes adding at once wait for each
    /// other (busy timeout) instead of failing when a read lock cannot be upgraded.
    private static func writeImmediate(
        _ queue: DatabaseQueue, _ path: String, _ body: (Database) throws -> Void
    ) throws {
        try queue.writeWithoutTransaction { db in
            try db.inTransaction(.immediate) {
                try body(db)
                return .commit
            }
        }
    }

    private static func initializeMeta(_ db: Database) throws {
        if try Data.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'token_key'") == nil {
            let tokenKey = try RelayCrypto.randomBytes(RelayCrypto.tokenKeyLength)
            try db.execute(sql: "INSERT INTO meta (name, value) VALUES ('token_key', ?)", arguments: [Data(tokenKey)])
        }
        try db.execute(sql: "INSERT OR IGNORE INTO meta (name, value) VALUES ('seq', 0)")
    }

    static func exists(_ db: Database, _ id: String) throws -> Bool {
        try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM devices WHERE id = ?)", arguments: [id]) ?? false
    }

    private static func seq(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE name = 'seq'") ?? 0
    }

    static func bumpSeq(_ db: Database) throws -> Int64 {
        let next = try seq(db) + 1
        try db.execute(sql: "UPDATE meta SET value = ? WHERE name = 'seq'", arguments: [next])
        return next
    }

    private static func mapped(_ error: Error, _ path: String) -> Error {
        if let error = error as? DatabaseError {
            return DeviceStoreError.database(path, error.message ?? "\(error.resultCode)")
        }
        return error
    }
}
