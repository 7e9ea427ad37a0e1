import Foundation
import GRDB

/// Minting, listing and revoking terminal tokens. The store records each token by its ID,
/// device and dates, never its text or MAC; revoking bumps the change counter, so that a
/// running relay refuses the token within about half a second (``DeviceSyncService``).
extension DeviceStore {
    /// A token for `id` valid for `ttl` from `now`, signed with this store's token key and
    /// bound to the device's current key, and recorded so that it can be listed and revoked.
    public func mintToken(id: String, ttl: Duration, now: Date = Date()) throws -> String {
        let deviceKey = try key(for: id)
        let expires = UInt64(now.timeIntervalSince1970) + UInt64(ttl.components.seconds)
        let tokenID = try RelayCrypto.randomBytes(Tokens.idLength)
        let token = try Tokens.mint(
            tokenKey: tokenKey(), deviceID: id, deviceKey: deviceKey, expiresUnix: expires, tokenID: tokenID)
        try write { db in
            // Removed since its key was read: the token could never verify, so it is not handed out.
            guard try Self.exists(db, id) else { throw DeviceStoreError.noSuchDevice(id) }
            try db.execute(
                sql: "INSERT INTO tokens (id, device, created_at, expires_at) VALUES (?, ?, ?, ?)",
                arguments: [Hex.encode(tokenID), id, now.timeIntervalSince1970, Int64(clamping: expires)])
        }
        return token
    }

    /// The recorded tokens, newest first: of `device` when given (which must exist), and only
    /// those not expired at `now` unless `includeExpired`.
    public func tokens(device: String? = nil, includeExpired: Bool = false, now: Date = Date()) throws
        -> [TokenRecord]
    {
        try read { db in
            if let device, try !Self.exists(db, device) { throw DeviceStoreError.noSuchDevice(device) }
            var sql = "SELECT id, device, created_at, expires_at, revoked_at FROM tokens WHERE 1"
            var arguments: StatementArguments = []
            if let device {
                sql += " AND device = ?"
                arguments += [device]
            }
            if !includeExpired {
                sql += " AND expires_at >= ?"
                arguments += [Self.unixSeconds(now)]
            }
            sql += " ORDER BY created_at DESC, rowid DESC"
            return try Row.fetchAll(db, sql: sql, arguments: arguments).map(Self.tokenRecord)
        }
    }

    /// Revokes the tokens named by `ids` (16 hex digits each, see ``Tokens/id(in:)``), all or
    /// none: an unknown or malformed ID changes nothing. Returns the IDs revoked by this call;
    /// a token revoked before keeps its first revocation and is not in the result.
    @discardableResult
    public func revokeTokens(_ ids: [String], now: Date = Date()) throws -> [String] {
        let normalized = try ids.map { text in
            guard let id = Tokens.id(in: text) else { throw DeviceStoreError.invalidTokenID(text) }
            return id
        }
        var revoked: [String] = []
        try write { db in
            var pending: [String] = []
            for id in normalized where !pending.contains(id) {
                guard let row = try Row.fetchOne(db, sql: "SELECT revoked_at FROM tokens WHERE id = ?", arguments: [id])
                else { throw DeviceStoreError.noSuchToken(id) }
                let revokedAt: Double? = row["revoked_at"]
                if revokedAt == nil { pending.append(id) }
            }
            revoked = try Self.markRevoked(db, pending, now: now)
        }
        return revoked
    }

    /// Revokes every unexpired token of `device` not revoked yet; returns their IDs, newest first.
    @discardableResult
    public func revokeTokens(device: String, now: Date = Date()) throws -> [String] {
        var revoked: [String] = []
        try write { db in
            guard try Self.exists(db, device) else { throw DeviceStoreError.noSuchDevice(device) }
            let ids = try String.fetchAll(
                db,
                sql: """
                    SELECT id FROM tokens WHERE device = ? AND revoked_at IS NULL AND expires_at >= ?
                    ORDER BY created_at DESC, rowid DESC
                    """,
                arguments: [device, Self.unixSeconds(now)])
            revoked = try Self.markRevoked(db, ids, now: now)
        }
        return revoked
    }

    /// Every revoked token not expired at `now`: what a starting relay loads into its core.
    public func revokedTokens(now: Date = Date()) throws -> [RevokedToken] {
        try read { db in try Self.revocations(db, since: 0, now: now) }
    }

    // MARK: plumbing

    /// Tokens revoked after change counter value `seq` that are still unexpired at `now`.
    static func revocations(_ db: Database, since seq: Int64, now: Date) throws -> [RevokedToken] {
        try Row.fetchAll(
            db,
            sql: """
                SELECT id, expires_at FROM tokens
                WHERE revoked_seq > ? AND expires_at >= ?
                ORDER BY revoked_seq
                """,
            arguments: [seq, unixSeconds(now)]
        ).map { row in
            let expires: Int64 = row["expires_at"]
            return RevokedToken(id: row["id"], expiresUnix: UInt64(max(0, expires)))
        }
    }

    /// One change counter bump for the whole batch; nothing at all for an empty one.
    private static func markRevoked(_ db: Database, _ ids: [String], now: Date) throws -> [String] {
        guard !ids.isEmpty else { return [] }
        let seq = try bumpSeq(db)
        let update = try db.makeStatement(sql: "UPDATE tokens SET revoked_at = ?, revoked_seq = ? WHERE id = ?")
        for id in ids {
            try update.execute(arguments: [now.timeIntervalSince1970, seq, id])
        }
        return ids
    }

    private static func tokenRecord(_ row: Row) -> TokenRecord {
        let expires: Int64 = row["expires_at"]
        let revokedAt: Double? = row["revoked_at"]
        return TokenRecord(
            id: row["id"], device: row["device"], createdAt: Date(timeIntervalSince1970: row["created_at"]),
            expiresUnix: UInt64(max(0, expires)), revokedAt: revokedAt.map(Date.init(timeIntervalSince1970:)))
    }

    /// Whole seconds, as token expiries are written and checked.
    private static func unixSeconds(_ date: Date) -> Int64 {
        Int64(max(0, date.timeIntervalSince1970))
    }
}
