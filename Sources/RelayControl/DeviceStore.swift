import Foundation

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
    /// Rows left out because their ID or key is malformed (a store edited by hand, or by
    /// something other than the relay): logged, never put into the core.
    public var invalid: [String] = []
}

/// The provisioned devices, the tokens minted for them, the relay's token key and the admin
/// API's keys: in SQLite at `<data>/relay.sqlite` by default, or in PostgreSQL
/// (`--store postgres://...`) for a cluster of relays sharing one fleet.
///
/// The relay and the CLI open the same store from different processes; the `seq` change
/// counter lets the relay pick up only what changed since its last look.
public final class DeviceStore: Sendable {
    public static let fileName = "relay.sqlite"
    /// The `--store` value that means the embedded SQLite file (the default).
    public static let embedded = "sqlite"

    /// The store as messages name it: the SQLite file's path, or the PostgreSQL URL without
    /// its password.
    public let databasePath: String
    let backend: any StoreBackend

    /// Opens the store named by `store`: `sqlite` (the file in `directory`) or a
    /// `postgres://` / `postgresql://` URL. When `createIfMissing` is false a missing SQLite
    /// file is an error rather than a new empty one, so that a mistyped --data does not look
    /// like an empty relay.
    public init(directory: String, store: String = DeviceStore.embedded, createIfMissing: Bool = true) throws {
        if Self.isPostgres(store) {
            // The directory still holds this relay's own files (admin.json).
            if createIfMissing { try DataDirectory.prepare(directory) }
            do {
                backend = try PostgresStoreBackend(url: store)
            } catch {
                throw Self.mapped(error, PostgresConnection.redacted(store))
            }
        } else {
            guard store == Self.embedded else { throw DeviceStoreError.unknownStore(store) }
            let path = (directory as NSString).appendingPathComponent(Self.fileName)
            if !createIfMissing, !FileManager.default.fileExists(atPath: path) {
                throw DeviceStoreError.storeMissing(path)
            }
            try DataDirectory.prepare(directory)
            try DataDirectory.prepareSecretFile(path)
            do {
                backend = try SQLiteStoreBackend(path: path)
            } catch {
                throw Self.mapped(error, path)
            }
        }
        databasePath = backend.name
        try write { tx in try Self.initializeMeta(tx) }
    }

    /// Whether other relays may share this store (PostgreSQL).
    public var isShared: Bool { backend.dialect == .postgres }

    /// Whether `store` names a PostgreSQL database rather than the embedded file.
    public static func isPostgres(_ store: String) -> Bool {
        store.hasPrefix("postgres://") || store.hasPrefix("postgresql://")
    }

    /// `store` as logs and check-config may show it (no password).
    public static func displayName(_ store: String) -> String {
        isPostgres(store) ? PostgresConnection.redacted(store) : store
    }

    // MARK: devices

    /// Provisions `id` and returns its new 32-byte secret, which is shown once and never
    /// stored: only K = rl_derive_device_key(secret) is kept.
    public func add(id: String, now: Date = Date()) throws -> [UInt8] {
        guard RelayCrypto.isValidDeviceID(id) else { throw DeviceStoreError.invalidDeviceID(id) }
        let secret = try RelayCrypto.randomBytes(RelayCrypto.secretLength)
        let key = try RelayCrypto.deviceKey(secret: secret)
        try write(existing: id) { tx in
            if try Self.exists(tx, id) { throw DeviceStoreError.deviceExists(id) }
            let seq = try Self.bumpSeq(tx)
            try tx.execute(
                "INSERT INTO devices (id, key, created_at, seq) VALUES (?, ?, ?, ?)",
                [.text(id), .blob(key), .double(now.timeIntervalSince1970), .int(seq)])
        }
        return secret
    }

    /// Deprovisions `id`; a running relay drops it on its next sync. Its token records go too:
    /// those tokens can never verify again, even if the ID is added back (new secret, new key).
    public func remove(id: String) throws {
        try write { tx in
            guard try Self.exists(tx, id) else { throw DeviceStoreError.noSuchDevice(id) }
            let seq = try Self.bumpSeq(tx)
            try tx.execute("DELETE FROM devices WHERE id = ?", [.text(id)])
            try tx.execute("INSERT INTO removals (id, seq) VALUES (?, ?)", [.text(id), .int(seq)])
            try tx.execute("DELETE FROM tokens WHERE device = ?", [.text(id)])
        }
    }

    /// Every device, ordered by ID.
    public func list() throws -> [DeviceSummary] {
        try read { tx in try tx.rows("SELECT id, created_at FROM devices ORDER BY id").map(Self.summary) }
    }

    /// The derived key K of `id`.
    public func key(for id: String) throws -> [UInt8] {
        let name = databasePath
        return try read { tx in
            guard let row = try tx.row("SELECT key FROM devices WHERE id = ?", [.text(id)])
            else { throw DeviceStoreError.noSuchDevice(id) }
            let key = row.blob(0)
            guard key.count == RelayCrypto.deviceKeyLength else {
                throw DeviceStoreError.corrupt(name, "the key of device '\(id)' is \(key.count) bytes")
            }
            return key
        }
    }

    // MARK: relay-wide state

    /// The 32-byte key terminal tokens are signed with, made on the store's first open.
    public func tokenKey() throws -> [UInt8] {
        let name = databasePath
        return try read { tx in
            guard let key = try tx.row("SELECT value FROM meta WHERE name = 'token_key'")?.blob(0),
                key.count == RelayCrypto.tokenKeyLength
            else { throw DeviceStoreError.corrupt(name, "the token key is missing or has the wrong length") }
            return key
        }
    }

    /// The change counter: it grows with every add, remove and token revocation.
    public func currentSeq() throws -> Int64 {
        try read { tx in try Self.seq(tx) }
    }

    /// Everything that changed after `seq`; `changes(since: 0)` is every device. An ID that
    /// was removed and then added again appears only as an upsert, with its new key. Tokens
    /// already expired at `now` are left out of the revocations: they are refused anyway.
    public func changes(since seq: Int64, now: Date = Date()) throws -> DeviceChanges {
        try read { tx in
            let current = try Self.seq(tx)
            var invalid: [String] = []
            let upserts = try tx.rows(
                "SELECT id, key FROM devices WHERE seq > ? ORDER BY seq", [.int(seq)]
            ).compactMap { row -> (id: String, key: [UInt8])? in
                let (id, key) = (row.string(0), row.blob(1))
                guard Self.isValidRow(id: id, keyLength: key.count) else {
                    invalid.append(id)
                    return nil
                }
                return (id, key)
            }
            let removals = try tx.rows(
                """
                SELECT DISTINCT id FROM removals
                WHERE seq > ? AND id NOT IN (SELECT id FROM devices)
                ORDER BY id
                """,
                [.int(seq)]
            ).map { $0.string(0) }
            let revocations = try Self.revocations(tx, since: seq, now: now)
            var changes = DeviceChanges(seq: current, upserts: upserts, removals: removals, revocations: revocations)
            changes.invalid = invalid
            return changes
        }
    }

    /// Calls `body` for every device, streaming rows without building a list (a million
    /// devices must not cost a million Swift values at start), and returns the change
    /// counter the pass is consistent with. A row with a malformed ID or key goes to
    /// `invalid` instead.
    public func forEachDevice(
        invalid: (_ id: String) -> Void = { _ in }, _ body: (_ id: String, _ key: UnsafeRawBufferPointer) -> Void
    ) throws -> Int64 {
        try read { tx in
            let now = try Self.seq(tx)
            try tx.forEachRow("SELECT id, key FROM devices", []) { row in
                let (id, key) = (row.string(0), row.blob(1))
                guard Self.isValidRow(id: id, keyLength: key.count) else { return invalid(id) }
                key.withUnsafeBytes { body(id, $0) }
            }
            return now
        }
    }

    /// What the core accepts: the relay writes nothing else, but a shared store may be
    /// written by other hands, and one bad row must not stop every node.
    static func isValidRow(id: String, keyLength: Int) -> Bool {
        keyLength == RelayCrypto.deviceKeyLength && RelayCrypto.isValidDeviceID(id)
    }

    // MARK: plumbing

    func read<T>(_ body: (StoreTransaction) throws -> T) throws -> T {
        do {
            return try backend.read(body)
        } catch {
            throw Self.mapped(error, databasePath)
        }
    }

    /// A write; `existing` names the device whose key another writer may have just taken,
    /// so that the race ends in "already exists" like the check before it.
    func write<T>(existing: String? = nil, _ body: (StoreTransaction) throws -> T) throws -> T {
        do {
            return try backend.write(body)
        } catch let failure as StoreFailure where failure.uniqueViolation && existing != nil {
            throw DeviceStoreError.deviceExists(existing!)
        } catch {
            throw Self.mapped(error, databasePath)
        }
    }

    private static func initializeMeta(_ tx: StoreTransaction) throws {
        // ON CONFLICT: two nodes opening a new fleet store at once keep one token key.
        let tokenKey = try RelayCrypto.randomBytes(RelayCrypto.tokenKeyLength)
        try tx.execute(
            "INSERT INTO meta (name, value) VALUES ('token_key', ?) ON CONFLICT DO NOTHING", [.blob(tokenKey)])
        if tx.dialect == .sqlite {
            try tx.execute("INSERT INTO meta (name, value) VALUES ('seq', 0) ON CONFLICT DO NOTHING")
        }
    }

    static func summary(_ row: StoreRow) -> DeviceSummary {
        DeviceSummary(id: row.string(0), createdAt: Date(timeIntervalSince1970: row.double(1)))
    }

    static func exists(_ tx: StoreTransaction, _ id: String) throws -> Bool {
        try tx.row("SELECT count(*) FROM devices WHERE id = ?", [.text(id)])?.int(0) ?? 0 > 0
    }

    private static func seq(_ tx: StoreTransaction) throws -> Int64 {
        switch tx.dialect {
        case .sqlite: return try tx.row("SELECT value FROM meta WHERE name = 'seq'")?.int(0) ?? 0
        case .postgres: return try tx.row("SELECT value FROM change_counter")?.int(0) ?? 0
        }
    }

    /// The next change counter value. In PostgreSQL the row lock it takes holds until commit
    /// (values follow commit order), and the NOTIFY it queues reaches every listening node
    /// when the transaction commits, not before.
    static func bumpSeq(_ tx: StoreTransaction) throws -> Int64 {
        switch tx.dialect {
        case .sqlite:
            let next = try seq(tx) + 1
            try tx.execute("UPDATE meta SET value = ? WHERE name = 'seq'", [.int(next)])
            return next
        case .postgres:
            let next = try tx.row("UPDATE change_counter SET value = value + 1 RETURNING value")?.int(0) ?? 0
            _ = try tx.rows("SELECT pg_notify(?, ?)", [.text(PostgresStoreBackend.channel), .text(String(next))])
            return next
        }
    }

    static func mapped(_ error: Error, _ name: String) -> Error {
        if let failure = error as? StoreFailure {
            return DeviceStoreError.database(name, failure.message)
        }
        return error
    }
}
