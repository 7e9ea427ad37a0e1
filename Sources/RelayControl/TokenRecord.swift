import Foundation

/// One minted token as the store records it: never its text or MAC, only what it takes to
/// list and revoke it.
public struct TokenRecord: Equatable, Sendable {
    /// The token's ID, 16 lowercase hex digits (its tid field).
    public let id: String
    public let device: String
    public let createdAt: Date
    /// The expiry in the token: valid through this second, Unix time.
    public let expiresUnix: UInt64
    public let revokedAt: Date?

    public enum State: String, Sendable {
        case valid, expired, revoked
    }

    /// Revoked wins over expired: both refuse the token, and revoked says why more exactly.
    public func state(at now: Date) -> State {
        if revokedAt != nil { return .revoked }
        return expiresUnix < UInt64(max(0, now.timeIntervalSince1970)) ? .expired : .valid
    }

    public var expiresAt: Date { Date(timeIntervalSince1970: TimeInterval(expiresUnix)) }
}

/// A revoked token the relay's core must refuse until it expires.
public struct RevokedToken: Equatable, Sendable {
    /// The token's ID, 16 lowercase hex digits.
    public let id: String
    public let expiresUnix: UInt64

    /// The ID as the core takes it: 8 bytes.
    public var idBytes: [UInt8] { Hex.decode(id) ?? [] }
}
