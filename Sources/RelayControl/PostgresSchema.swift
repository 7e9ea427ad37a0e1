import Foundation

/// The store's tables in PostgreSQL: the SQLite schema (``DeviceStoreSchema``) in
/// PostgreSQL's types, plus what sharing one database among nodes needs. Migrations run on
/// open, each once, recorded in `relay_migrations`; an advisory lock makes nodes starting at
/// the same moment take turns rather than race to create the same table.
enum PostgresSchema {
    /// The advisory lock's key: "relay" in ASCII.
    static let lockKey: Int64 = 0x72_656c_6179

    static let migrations: [(name: String, sql: [String])] = [
        (
            "v1 devices, removals, meta, tokens, admin keys",
            [
                // key is the 16-byte derived key K; seq the change counter value of its add.
                // The checks mirror what the core accepts (rl_device_id_valid, 16-byte K); the
                // relay also skips rows that fail them, in case they are dropped.
                """
                CREATE TABLE devices (
                    id TEXT PRIMARY KEY CHECK (id ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
                    key BYTEA NOT NULL CHECK (octet_length(key) = 16),
                    created_at DOUBLE PRECISION, seq BIGINT)
                """,
                "CREATE INDEX devices_seq ON devices(seq)",
                "CREATE TABLE removals (id TEXT, seq BIGINT)",
                "CREATE INDEX removals_seq ON removals(seq)",
                "CREATE TABLE meta (name TEXT PRIMARY KEY, value BYTEA)",
                // One row. UPDATE ... value + 1 locks it until commit, so change counter values
                // are handed out in commit order and a node's cursor never skips a change.
                "CREATE TABLE change_counter (value BIGINT NOT NULL)",
                "INSERT INTO change_counter (value) VALUES (0)",
                // n orders tokens minted in the same instant, as rowid does in SQLite.
                """
                CREATE TABLE tokens (
                    n BIGSERIAL, id TEXT PRIMARY KEY, device TEXT NOT NULL,
                    created_at DOUBLE PRECISION NOT NULL, expires_at BIGINT NOT NULL,
                    revoked_at DOUBLE PRECISION, revoked_seq BIGINT)
                """,
                "CREATE INDEX tokens_device ON tokens(device)",
                "CREATE INDEX tokens_revoked_seq ON tokens(revoked_seq)",
                """
                CREATE TABLE admin_keys (
                    id TEXT PRIMARY KEY, name TEXT NOT NULL, hash BYTEA NOT NULL,
                    created_at DOUBLE PRECISION NOT NULL, local INTEGER NOT NULL DEFAULT 0)
                """,
            ]
        )
    ]

    static func migrate(_ tx: StoreTransaction) throws {
        _ = try tx.rows("SELECT pg_advisory_xact_lock(?)", [.int(lockKey)])
        try tx.execute("CREATE TABLE IF NOT EXISTS relay_migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION)")
        let applied = Set(try tx.rows("SELECT name FROM relay_migrations").map { $0.string(0) })
        for migration in migrations where !applied.contains(migration.name) {
            for statement in migration.sql { try tx.execute(statement) }
            try tx.execute(
                "INSERT INTO relay_migrations (name, applied_at) VALUES (?, ?)",
                [.text(migration.name), .double(Date().timeIntervalSince1970)])
        }
    }
}
