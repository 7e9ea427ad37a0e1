/// The few SQL operations the device store needs, so that its queries run unchanged on
/// SQLite (the embedded default, ``SQLiteStoreBackend``) and on PostgreSQL (a fleet's shared
/// store, ``PostgresStoreBackend``). Statements use `?` placeholders; where the two dialects
/// differ, ``StoreDialect`` gives the fragment.

/// A value bound to a statement or read from a row.
enum StoreValue: Sendable, Equatable {
    case null
    case int(Int64)
    case double(Double)
    case text(String)
    case blob([UInt8])
}

/// One result row, by column position.
struct StoreRow {
    let values: [StoreValue]

    func string(_ i: Int) -> String {
        switch values[i] {
        case .text(let s): return s
        case .int(let n): return String(n)
        case .double(let d): return String(d)
        case .blob(let b): return String(decoding: b, as: UTF8.self)
        case .null: return ""
        }
    }

    func int(_ i: Int) -> Int64 {
        switch values[i] {
        case .int(let n): return n
        case .double(let d): return Int64(d)
        case .text(let s): return Int64(s) ?? 0
        default: return 0
        }
    }

    func optionalDouble(_ i: Int) -> Double? {
        switch values[i] {
        case .double(let d): return d
        case .int(let n): return Double(n)
        case .text(let s): return Double(s)
        default: return nil
        }
    }

    func double(_ i: Int) -> Double { optionalDouble(i) ?? 0 }

    func blob(_ i: Int) -> [UInt8] {
        switch values[i] {
        case .blob(let b): return b
        case .text(let s): return Array(s.utf8)
        default: return []
        }
    }
}

/// Where the SQL of the two engines differs.
enum StoreDialect: Sendable {
    case sqlite, postgres

    /// `position of needle in haystack`, 1-based, 0 when absent.
    var substringPosition: String { self == .sqlite ? "instr" : "strpos" }
    /// A column that orders rows of `tokens` by insertion, to break ties of created_at.
    var tokensInsertionOrder: String { self == .sqlite ? "rowid" : "n" }
}

/// Statements inside one transaction.
protocol StoreTransaction {
    var dialect: StoreDialect { get }
    /// Runs a statement; returns how many rows it changed.
    @discardableResult func execute(_ sql: String, _ arguments: [StoreValue]) throws -> Int
    func rows(_ sql: String, _ arguments: [StoreValue]) throws -> [StoreRow]
    /// Streams the rows without collecting them (a million devices at start).
    func forEachRow(_ sql: String, _ arguments: [StoreValue], _ body: (StoreRow) throws -> Void) throws
}

extension StoreTransaction {
    @discardableResult func execute(_ sql: String) throws -> Int { try execute(sql, []) }
    func rows(_ sql: String) throws -> [StoreRow] { try rows(sql, []) }
    func row(_ sql: String, _ arguments: [StoreValue] = []) throws -> StoreRow? { try rows(sql, arguments).first }
}

/// What a backend reports; ``DeviceStore`` turns it into a ``DeviceStoreError``.
struct StoreFailure: Error {
    let message: String
    /// A primary key taken by another writer (two `relay device add` of one ID at once).
    var uniqueViolation = false
    /// The engine could not be reached at all (as opposed to a statement failing).
    var unreachable = false
}

/// One engine holding the store's tables.
protocol StoreBackend: Sendable {
    /// The store as messages name it: a file path, or a URL without its password.
    var name: String { get }
    var dialect: StoreDialect { get }
    /// Runs `body` in a transaction that sees one snapshot.
    func read<T>(_ body: (StoreTransaction) throws -> T) throws -> T
    /// Runs `body` in a transaction that takes the write lock (SQLite) or row locks as it
    /// goes (PostgreSQL); commits when it returns, rolls back when it throws.
    func write<T>(_ body: (StoreTransaction) throws -> T) throws -> T
}
