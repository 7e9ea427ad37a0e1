import CRelayCore
import Foundation
import GRDB

/// One admin API key as the store records it: its ID, name and creation, never its text.
public struct AdminKeyRecord: Equatable, Sendable {
    public let id: String
    public let name: String
    public let createdAt: Date
    public let local: Bool
}

/// Admin API keys and the paged device reads the admin API needs.
///
/// An admin key is `rk_` + 64 hex digits (32 random bytes), shown once; the store keeps its
/// SHA-256 (a key that random needs no slow hash), so a copy of the store opens nothing.
extension DeviceStore {
    public static let adminKeyPrefix = "rk_"

    /// Makes a key named `name`, records its hash and returns (its ID, its text). `local`
    /// keys belong to a running relay's admin.json and are replaced at each start.
    public func createAdminKey(name: String, local: Bool = false, now: Date = Date()) throws -> (id: String, key: String) {
        let secret = try RelayCrypto.randomBytes(32)
        let key = Self.adminKeyPrefix + Hex.encode(secret)
        let id = Hex.encode(try RelayCrypto.randomBytes(6))
        let hash = Self.adminKeyHash(key)
        try write { db in
            if local { try db.execute(sql: "DELETE FROM admin_keys WHERE local = 1") }
            try db.execute(
                sql: "INSERT INTO admin_keys (id, name, hash, created_at, local) VALUES (?, ?, ?, ?, ?)",
                arguments: [id, name, Data(hash), now.timeIntervalSince1970, local ? 1 : 0])
        }
        return (id, key)
    }

    public func adminKeys() throws -> [AdminKeyRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT id, name, created_at, local FROM admin_keys ORDER BY created_at, id").map {
                AdminKeyRecord(
                    id: $0["id"], name: $0["name"], createdAt: Date(timeIntervalSince1970: $0["created_at"]),
                    local: ($0["local"] as Int? ?? 0) != 0)
            }
        }
    }

    /// The hashes of every admin key, for the admin listener's check.
    public func adminKeyHashes() throws -> [[UInt8]] {
        try read { db in try Data.fetchAll(db, sql: "SELECT hash FROM admin_keys").map { [UInt8]($0) } }
    }

    /// Revokes the admin key `id`; false when there is none.
    @discardableResult
    public func revokeAdminKey(id: String) throws -> Bool {
        var found = false
        try write { db in
            try db.execute(sql: "DELETE FROM admin_keys WHERE id = ?", arguments: [id])
            found = db.changesCount > 0
        }
        return found
    }

    /// Removes the local key (the relay stopping).
    public func removeLocalAdminKeys() throws {
        try write { db in try db.execute(sql: "DELETE FROM admin_keys WHERE local = 1") }
    }

    public static func adminKeyHash(_ key: String) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var text = key
        text.withUTF8 { utf8 in
            utf8.withMemoryRebound(to: CChar.self) { rl_admin_key_hash($0.baseAddress, $0.count, &out) }
        }
        return out
    }

    // MARK: paged device reads

    /// Up to `limit` devices with IDs after `after` (nil: from the first), ordered by ID, and
    /// optionally only IDs containing `search`. Each page is one indexed range read.
    public func devicePage(after: String?, limit: Int, search: String? = nil) throws -> [DeviceSummary] {
        try read { db in
            var sql = "SELECT id, created_at FROM devices WHERE id > ?"
            var arguments: StatementArguments = [after ?? ""]
            if let search, !search.isEmpty {
                sql += " AND instr(id, ?) > 0"
                arguments += [search]
            }
            sql += " ORDER BY id LIMIT ?"
            arguments += [limit]
            return try Row.fetchAll(db, sql: sql, arguments: arguments).map { row in
                DeviceSummary(id: row["id"], createdAt: Date(timeIntervalSince1970: row["created_at"] ?? 0))
            }
        }
    }

    /// The device `id`, or nil.
    public func device(_ id: String) throws -> DeviceSummary? {
        try read { db in
            try Row.fetchOne(db, sql: "SELECT id, created_at FROM devices WHERE id = ?", arguments: [id]).map { row in
                DeviceSummary(id: row["id"], createdAt: Date(timeIntervalSince1970: row["created_at"] ?? 0))
            }
        }
    }

    public func deviceCount() throws -> Int {
        try read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM devices") ?? 0 }
    }

    /// A new secret for `id` (its old one, and every token minted under it, stop working):
    /// the device's key is replaced under a new change counter value. Returns the secret.
    public func rotateSecret(id: String) throws -> [UInt8] {
        let secret = try RelayCrypto.randomBytes(RelayCrypto.secretLength)
        let key = try RelayCrypto.deviceKey(secret: secret)
        try write { db in
            guard try Self.exists(db, id) else { throw DeviceStoreError.noSuchDevice(id) }
            let seq = try Self.bumpSeq(db)
            try db.execute(sql: "UPDATE devices SET key = ?, seq = ? WHERE id = ?", arguments: [Data(key), seq, id])
            try db.execute(sql: "DELETE FROM tokens WHERE device = ?", arguments: [id])
        }
        return secret
    }
}
