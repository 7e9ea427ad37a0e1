import Foundation

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
        try write { tx in
            // Removed since its key was read: the token could never verify, so it is not handed out.
            guard try Self.exists(tx, id) else { throw DeviceStoreError.noSuchDevice(id) }
            try tx.execute(
                "INSERT INTO tokens (id, device, created_at, expires_at) VALUES (?, ?, ?, ?)",
                [.text(Hex.encode(tokenID)), .text(id), .double(now.timeIntervalSince1970), .int(Int64(clamping: expires))])
        }
        return token
    }

    /// The recorded tokens, newest first: of `device` when given (which must exist), and only
    /// those not expired at `now` unless `includeExpired`.
    public func tokens(device: String? = nil, includeExpired: Bool = false, now: Date = Date()) throws
        -> [TokenRecord]
    {
        try read { tx in
            if let device, try !Self.exists(tx, device) { throw DeviceStoreError.noSuchDevice(device) }
            var sql = "SELECT id, device, created_at, expires_at, revoked_at FROM tokens WHERE 1 = 1"
            var arguments: [StoreValue] = []
            if let device {
                sql += " AND device = ?"
                arguments.append(.text(device))
            }
            if !includeExpired {
                sql += " AND expires_at >= ?"
                arguments.append(.int(Self.unixSeconds(now)))
            }
            sql += " ORDER BY created_at DESC, \(tx.dialect.tokensInsertionOrder) DESC"
            return try tx.rows(sql, arguments).map(Self.tokenRecord)
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
        return try write { tx in
            var pending: [String] = []
            for id in normalized where !pending.contains(id) {
                // FOR UPDATE (PostgreSQL): two revocations of one token at once revoke it once.
                let lock = tx.dialect == .postgres ? " FOR UPDATE" : ""
                guard let row = try tx.row("SELECT revoked_at FROM tokens WHERE id = ?" + lock, [.text(id)])
                else { throw DeviceStoreError.noSuchToken(id) }
                if row.optionalDouble(0) == nil { pending.append(id) }
            }
            return try Self.markRevoked(tx, pending, now: now)
        }
    }

    /// Revokes every unexpired token of `device` not revoked yet; returns their IDs, newest first.
    @discardableResult
    public func revokeTokens(device: String, now: Date = Date()) throws -> [String] {
        try write { tx in
            guard try Self.exists(tx, device) else { throw DeviceStoreError.noSuchDevice(device) }
            let lock = tx.dialect == .postgres ? " FOR UPDATE" : ""
            let ids = try tx.rows(
                """
                SELECT id FROM tokens WHERE device = ? AND revoked_at IS NULL AND expires_at >= ?
                ORDER BY created_at DESC, \(tx.dialect.tokensInsertionOrder) DESC
                """ + lock,
                [.text(device), .int(Self.unixSeconds(now))]
            ).map { $0.string(0) }
            return try Self.markRevoked(tx, ids, now: now)
        }
    }

    /// Every revoked token not expired at `now`: what a starting relay loads into its core.
    public func revokedTokens(now: Date = Date()) throws -> [RevokedToken] {
        try read { tx in try Self.revocations(tx, since: 0, now: now) }
    }

    // MARK: plumbing

    /// Tokens revoked after change counter value `seq` that are still unexpired at `now`.
    static func revocations(_ tx: StoreTransaction, since seq: Int64, now: Date) throws -> [RevokedToken] {
        try tx.rows(
            """
            SELECT id, expires_at FROM tokens
            WHERE revoked_seq > ? AND expires_at >= ?
            ORDER BY revoked_seq
            """,
            [.int(seq), .int(unixSeconds(now))]
        ).map { row in RevokedToken(id: row.string(0), expiresUnix: UInt64(max(0, row.int(1)))) }
    }

    /// One change counter bump for the whole batch; nothing at all for an empty one.
    private static func markRevoked(_ tx: StoreTransaction, _ ids: [String], now: Date) throws -> [String] {
        guard !ids.isEmpty else { return [] }
        let seq = try bumpSeq(tx)
        for id in ids {
            try tx.execute(
                "UPDATE tokens SET revoked_at = ?, revoked_seq = ? WHERE id = ?",
                [.double(now.timeIntervalSince1970), .int(seq), .text(id)])
        }
        return ids
    }

    private static func tokenRecord(_ row: StoreRow) -> TokenRecord {
        TokenRecord(
            id: row.string(0), device: row.string(1), createdAt: Date(timeIntervalSince1970: row.double(2)),
            expiresUnix: UInt64(max(0, row.int(3))), revokedAt: row.optionalDouble(4).map(Date.init(timeIntervalSince1970:)))
    }

    /// Whole seconds, as token expiries are written and checked.
    private static func unixSeconds(_ date: Date) -> Int64 {
        Int64(max(0, date.timeIntervalSince1970))
    }
}
