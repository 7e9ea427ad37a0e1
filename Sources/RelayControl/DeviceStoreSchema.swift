import GRDB

/// The store's tables, created and evolved by GRDB's migrator (each migration runs once).
enum DeviceStoreSchema {
    static func migrator() -> DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1 devices, removals, meta") { db in
            // key is the 16-byte derived key K; the secret it comes from is never stored.
            // seq is the change counter value of the add, for incremental sync.
            try db.execute(
                sql: """
                    CREATE TABLE devices (
                        id TEXT PRIMARY KEY,
                        key BLOB NOT NULL,
                        created_at DOUBLE,
                        seq INTEGER
                    );
                    CREATE INDEX devices_seq ON devices(seq);
                    CREATE TABLE removals (id TEXT, seq INTEGER);
                    CREATE INDEX removals_seq ON removals(seq);
                    CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB);
                    """)
        }
        migrator.registerMigration("v2 tokens") { db in
            // One row per minted token, named by its random ID (the token's tid field, 16 hex
            // digits). Neither the token text nor its MAC is kept: the row lets an operator list
            // and revoke a token, not use it. revoked_seq is the change counter value of the
            // revocation, so that a running relay picks it up like a device change.
            try db.execute(
                sql: """
                    CREATE TABLE tokens (
                        id TEXT PRIMARY KEY,
                        device TEXT NOT NULL,
                        created_at DOUBLE NOT NULL,
                        expires_at INTEGER NOT NULL,
                        revoked_at DOUBLE,
                        revoked_seq INTEGER
                    );
                    CREATE INDEX tokens_device ON tokens(device);
                    CREATE INDEX tokens_revoked_seq ON tokens(revoked_seq);
                    """)
        }
        migrator.registerMigration("v3 admin keys") { db in
            // Keys of the admin API, by SHA-256 of their text (never the text). `local` marks
            // the key a running relay makes for the CLI on the same machine (<data>/admin.json).
            try db.execute(
                sql: """
                    CREATE TABLE admin_keys (
                        id TEXT PRIMARY KEY,
                        name TEXT NOT NULL,
                        hash BLOB NOT NULL,
                        created_at DOUBLE NOT NULL,
                        local INTEGER NOT NULL DEFAULT 0
                    );
                    """)
        }
        return migrator
    }
}
