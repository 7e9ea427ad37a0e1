import CRelayCore
import Foundation

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
        try write { tx in
            // A shared store holds one local key per relay: each replaces only its own.
            if local { try tx.execute("DELETE FROM admin_keys WHERE local = 1 AND name = ?", [.text(name)]) }
            try tx.execute(
                "INSERT INTO admin_keys (id, name, hash, created_at, local) VALUES (?, ?, ?, ?, ?)",
                [.text(id), .text(name), .blob(hash), .double(now.timeIntervalSince1970), .int(local ? 1 : 0)])
        }
        return (id, key)
    }

    public func adminKeys() throws -> [AdminKeyRecord] {
        try read { tx in
            try tx.rows("SELECT id, name, created_at, local FROM admin_keys ORDER BY created_at, id").map {
                AdminKeyRecord(
                    id: $0.string(0), name: $0.string(1), createdAt: Date(timeIntervalSince1970: $0.double(2)),
                    local: $0.int(3) != 0)
            }
        }
    }

    /// The hashes of every admin key, for the admin listener's check.
    public func adminKeyHashes() throws -> [[UInt8]] {
        try read { tx in try tx.rows("SELECT hash FROM admin_keys").map { $0.blob(0) } }
    }

    /// Revokes the admin key `id`; false when there is none.
    @discardableResult
    public func revokeAdminKey(id: String) throws -> Bool {
        try write { tx in try tx.execute("DELETE FROM admin_keys WHERE id = ?", [.text(id)]) > 0 }
    }

    /// Removes the local key named `name` (its relay stopping).
    public func removeLocalAdminKeys(name: String) throws {
        try write { tx in try tx.execute("DELETE FROM admin_keys WHERE local = 1 AND name = ?", [.text(name)]) }
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
        try read { tx in
            var sql = "SELECT id, created_at FROM devices WHERE id > ?"
            var arguments: [StoreValue] = [.text(after ?? "")]
            if let search, !search.isEmpty {
                sql += " AND \(tx.dialect.substringPosition)(id, ?) > 0"
                arguments.append(.text(search))
            }
            sql += " ORDER BY id LIMIT ?"
            arguments.append(.int(Int64(limit)))
            return try tx.rows(sql, arguments).map(Self.summary)
        }
    }

    /// The device `id`, or nil.
    public func device(_ id: String) throws -> DeviceSummary? {
        try read { tx in try tx.row("SELECT id, created_at FROM devices WHERE id = ?", [.text(id)]).map(Self.summary) }
    }

    public func deviceCount() throws -> Int {
        try read { tx in Int(try tx.row("SELECT count(*) FROM devices")?.int(0) ?? 0) }
    }

    /// A new secret for `id` (its old one, and every token minted under it, stop working):
    /// the device's key is replaced under a new change counter value. Returns the secret.
    public func rotateSecret(id: String) throws -> [UInt8] {
        let secret = try RelayCrypto.randomBytes(RelayCrypto.secretLength)
        let key = try RelayCrypto.deviceKey(secret: secret)
        try write { tx in
            guard try Self.exists(tx, id) else { throw DeviceStoreError.noSuchDevice(id) }
            let seq = try Self.bumpSeq(tx)
            try tx.execute("UPDATE devices SET key = ?, seq = ? WHERE id = ?", [.blob(key), .int(seq), .text(id)])
            try tx.execute("DELETE FROM tokens WHERE device = ?", [.text(id)])
        }
        return secret
    }
}
