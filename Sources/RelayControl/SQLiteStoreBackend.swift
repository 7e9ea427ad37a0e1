import Foundation
import GRDB

/// The embedded store: one SQLite file, `<data>/relay.sqlite`, opened by the relay and the
/// CLI from different processes. WAL lets the running relay read while `relay device add`
/// writes; IMMEDIATE write transactions make two writers wait for each other (busy timeout)
/// instead of failing when a read lock cannot be upgraded.
final class SQLiteStoreBackend: StoreBackend {
    let name: String
    var dialect: StoreDialect { .sqlite }
    private let queue: DatabaseQueue

    init(path: String) throws {
        name = path
        var configuration = Configuration()
        configuration.journalMode = .wal
        configuration.busyMode = .timeout(5)
        configuration.label = "relay.devices"
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration)
            try DeviceStoreSchema.migrator().migrate(queue)
        } catch {
            throw Self.failure(error)
        }
    }

    func read<T>(_ body: (StoreTransaction) throws -> T) throws -> T {
        do {
            return try queue.read { db in try body(Transaction(db: db)) }
        } catch {
            throw Self.failure(error)
        }
    }

    func write<T>(_ body: (StoreTransaction) throws -> T) throws -> T {
        do {
            return try queue.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try body(Transaction(db: db))
                    return .commit
                }
                return result!
            }
        } catch {
            throw Self.failure(error)
        }
    }

    /// GRDB's errors become ``StoreFailure``; the store's own errors pass through.
    private static func failure(_ error: Error) -> Error {
        guard let error = error as? DatabaseError else { return error }
        return StoreFailure(
            message: error.message ?? "\(error.resultCode)", uniqueViolation: error.resultCode == .SQLITE_CONSTRAINT)
    }

    private struct Transaction: StoreTransaction {
        let db: Database
        var dialect: StoreDialect { .sqlite }

        func execute(_ sql: String, _ arguments: [StoreValue]) throws -> Int {
            // Cached: bulk inserts run one statement a million times.
            try db.cachedStatement(sql: sql).execute(arguments: Self.bound(arguments))
            return db.changesCount
        }

        func rows(_ sql: String, _ arguments: [StoreValue]) throws -> [StoreRow] {
            try Row.fetchAll(db, sql: sql, arguments: Self.bound(arguments)).map(Self.row)
        }

        func forEachRow(_ sql: String, _ arguments: [StoreValue], _ body: (StoreRow) throws -> Void) throws {
            let cursor = try Row.fetchCursor(db, sql: sql, arguments: Self.bound(arguments))
            while let row = try cursor.next() { try body(Self.row(row)) }
        }

        private static func bound(_ values: [StoreValue]) -> StatementArguments {
            StatementArguments(values.map { value -> (any DatabaseValueConvertible)? in
                switch value {
                case .null: return nil
                case .int(let n): return n
                case .double(let d): return d
                case .text(let s): return s
                case .blob(let b): return Data(b)
                }
            })
        }

        private static func row(_ row: Row) -> StoreRow {
            StoreRow(values: row.databaseValues.map { value in
                switch value.storage {
                case .null: return .null
                case .int64(let n): return .int(n)
                case .double(let d): return .double(d)
                case .string(let s): return .text(s)
                case .blob(let data): return .blob([UInt8](data))
                }
            })
        }
    }
}
