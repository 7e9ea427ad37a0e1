import CLibPQ
import Foundation

/// The fleet's store: the same tables in PostgreSQL (`--store postgres://...`), shared by
/// every node of a cluster and by the CLI. Each write bumps the change counter and sends
/// `NOTIFY relay_changes` in its transaction, delivered at commit, so every node's
/// ``StoreChangeListener`` syncs at once instead of at its next poll.
///
/// One libpq connection, used by one transaction at a time (libpq connections are not
/// thread-safe); a connection the server dropped is re-opened on the next transaction.
final class PostgresStoreBackend: StoreBackend, @unchecked Sendable {
    static let channel = "relay_changes"

    let name: String
    let conninfo: String
    var dialect: StoreDialect { .postgres }
    private let lock = NSLock()
    private var connection: OpaquePointer?

    init(url: String) throws {
        conninfo = url
        name = PostgresConnection.redacted(url)
        try write { tx in try PostgresSchema.migrate(tx) }
    }

    deinit {
        if let connection { PQfinish(connection) }
    }

    func read<T>(_ body: (StoreTransaction) throws -> T) throws -> T {
        try transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", body)
    }

    func write<T>(_ body: (StoreTransaction) throws -> T) throws -> T {
        try transaction("BEGIN", body)
    }

    private func transaction<T>(_ begin: String, _ body: (StoreTransaction) throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        var conn = try open()
        do {
            PQclear(try PostgresConnection.exec(conn, begin, []))
        } catch let failure as StoreFailure where failure.unreachable {
            // The server restarted or dropped us while idle: nothing of this transaction ran,
            // so it is safe to open a new connection and start again once.
            PQfinish(conn)
            connection = nil
            conn = try open()
            PQclear(try PostgresConnection.exec(conn, begin, []))
        }
        do {
            let result = try body(PostgresTransaction(conn: conn))
            PQclear(try PostgresConnection.exec(conn, "COMMIT", []))
            return result
        } catch {
            if PQstatus(conn) == CONNECTION_OK {
                if let result = try? PostgresConnection.exec(conn, "ROLLBACK", []) { PQclear(result) }
            } else {
                PQfinish(conn)
                connection = nil
            }
            throw error
        }
    }

    private func open() throws -> OpaquePointer {
        if let connection, PQstatus(connection) == CONNECTION_OK { return connection }
        if let connection { PQfinish(connection) }
        connection = nil
        let conn = try PostgresConnection.connect(conninfo)
        connection = conn
        return conn
    }
}

/// Statements on one open connection, inside a transaction.
struct PostgresTransaction: StoreTransaction {
    let conn: OpaquePointer
    var dialect: StoreDialect { .postgres }

    func execute(_ sql: String, _ arguments: [StoreValue]) throws -> Int {
        let result = try PostgresConnection.exec(conn, sql, arguments)
        defer { PQclear(result) }
        return Int(String(cString: PQcmdTuples(result))) ?? 0
    }

    func rows(_ sql: String, _ arguments: [StoreValue]) throws -> [StoreRow] {
        let result = try PostgresConnection.exec(conn, sql, arguments)
        defer { PQclear(result) }
        return PostgresConnection.rows(result)
    }

    /// A cursor fetched in batches: a million devices never sit in one result.
    func forEachRow(_ sql: String, _ arguments: [StoreValue], _ body: (StoreRow) throws -> Void) throws {
        try execute("DECLARE relay_rows NO SCROLL CURSOR FOR " + sql, arguments)
        while true {
            let batch = try rows("FETCH 10000 FROM relay_rows")
            if batch.isEmpty { break }
            for row in batch { try body(row) }
        }
        try execute("CLOSE relay_rows")
    }
}

/// libpq calls, shared by the store's connection and the change listener's.
enum PostgresConnection {
    /// Opens a connection; the URL's own settings win over the defaults given here.
    static func connect(_ conninfo: String) throws -> OpaquePointer {
        // A dead address must not hang a CLI command or a sync: 5 s to connect, and a server
        // that stops answering (a partition, no RST) is given up after about 10 s, instead
        // of the kernel's two hours of keepalive and fifteen minutes of retransmissions.
        let keywords = [
            "connect_timeout", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
            "application_name", "dbname",
        ]
        let values = ["5", "5", "2", "3", "10000", "relay", conninfo]
        let conn = withCStrings(keywords) { k in
            withCStrings(values) { v in PQconnectdbParams(k, v, 1) }
        }
        guard let conn else { throw StoreFailure(message: "out of memory", unreachable: true) }
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = errorMessage(conn)
            PQfinish(conn)
            throw StoreFailure(message: message, unreachable: true)
        }
        // The server's NOTICEs (an IF NOT EXISTS that skipped) are not the CLI's output.
        PQsetNoticeProcessor(conn, { _, _ in }, nil)
        return conn
    }

    /// Runs one statement with `?` placeholders; returns its result (the caller clears it).
    @discardableResult
    static func exec(_ conn: OpaquePointer, _ sql: String, _ arguments: [StoreValue]) throws -> OpaquePointer {
        var types: [Oid] = []
        var lengths: [Int32] = []
        var formats: [Int32] = []
        var buffers: [UnsafeMutablePointer<CChar>?] = []
        defer { buffers.forEach { free($0) } }
        for argument in arguments {
            switch argument {
            case .null:
                types.append(0); lengths.append(0); formats.append(0); buffers.append(nil)
            case .int(let n):
                types.append(20); lengths.append(0); formats.append(0); buffers.append(strdup(String(n)))
            case .double(let d):
                types.append(701); lengths.append(0); formats.append(0); buffers.append(strdup("\(d)"))
            case .text(let s):
                types.append(25); lengths.append(0); formats.append(0); buffers.append(strdup(s))
            case .blob(let bytes):
                // bytea in binary form: no escaping, no size growth.
                let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, bytes.count))
                bytes.withUnsafeBytes { raw in
                    if let base = raw.baseAddress { memcpy(buffer, base, bytes.count) }
                }
                types.append(17); lengths.append(Int32(bytes.count)); formats.append(1); buffers.append(buffer)
            }
        }
        let values = buffers.map { UnsafePointer($0) }
        let result = PQexecParams(
            conn, numbered(sql), Int32(arguments.count), types, values, lengths, formats, 0)
        guard let result else {
            throw StoreFailure(message: errorMessage(conn), unreachable: PQstatus(conn) != CONNECTION_OK)
        }
        let status = PQresultStatus(result)
        if status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK { return result }
        let message = String(cString: PQresultErrorMessage(result)).trimmingCharacters(in: .whitespacesAndNewlines)
        let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
        PQclear(result)
        throw StoreFailure(
            message: message.isEmpty ? errorMessage(conn) : message,
            uniqueViolation: state == "23505",
            unreachable: PQstatus(conn) != CONNECTION_OK)
    }

    /// The result's rows in text form, typed by column: integers, floats, bytea, text.
    static func rows(_ result: OpaquePointer) -> [StoreRow] {
        let count = PQntuples(result)
        let columns = PQnfields(result)
        let types = (0..<columns).map { PQftype(result, $0) }
        return (0..<count).map { row in
            StoreRow(values: (0..<columns).map { column -> StoreValue in
                if PQgetisnull(result, row, column) != 0 { return .null }
                let text = String(cString: PQgetvalue(result, row, column))
                switch types[Int(column)] {
                case 20, 21, 23: return .int(Int64(text) ?? 0)
                case 700, 701, 1700: return .double(Double(text) ?? 0)
                case 16: return .int(text == "t" ? 1 : 0)
                case 17: return .blob(byteaHex(text))
                default: return .text(text)
                }
            })
        }
    }

    /// `?` placeholders become `$1`, `$2`...; the store's SQL has no `?` inside literals.
    static func numbered(_ sql: String) -> String {
        var out = ""
        var n = 0
        var quoted = false
        for c in sql {
            if c == "'" { quoted.toggle() }
            if c == "?" && !quoted {
                n += 1
                out += "$\(n)"
            } else {
                out.append(c)
            }
        }
        return out
    }

    /// bytea's hex output form, `\x0a1b...`.
    static func byteaHex(_ text: String) -> [UInt8] {
        guard text.hasPrefix("\\x") else { return Array(text.utf8) }
        return Hex.decode(String(text.dropFirst(2))) ?? []
    }

    static func errorMessage(_ conn: OpaquePointer) -> String {
        String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The URL as logs and errors may show it: user, host, port and database, never the
    /// password (in the URL or as `?password=`).
    static func redacted(_ url: String) -> String {
        var error: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(url, &error) else {
            if let error { PQfreemem(error) }
            return "postgres://(unparsable URL)"
        }
        defer { PQconninfoFree(options) }
        var fields: [String: String] = [:]
        var option = options
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val { fields[String(cString: keyword)] = String(cString: value) }
            option += 1
        }
        let user = fields["user"].map { $0 + "@" } ?? ""
        let host = fields["host"] ?? fields["hostaddr"] ?? "localhost"
        let port = fields["port"].map { ":" + $0 } ?? ""
        let database = fields["dbname"].map { "/" + $0 } ?? ""
        return "postgres://\(user)\(host)\(port)\(database)"
    }

    private static func withCStrings<R>(
        _ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R
    ) -> R {
        let copies = strings.map { strdup($0) }
        defer { copies.forEach { free($0) } }
        let pointers = copies.map { UnsafePointer($0) } + [nil]
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}
