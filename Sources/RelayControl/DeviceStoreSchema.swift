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
        return migrator
    }
}
