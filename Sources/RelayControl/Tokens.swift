import CRelayCore

/// Terminal access tokens "<id>.<expiry>.<tid>.<mac>" (docs/PROTOCOL.md, "Terminal tokens").
/// Minting and checking are the C functions the relay itself verifies with.
public enum Tokens {
    /// The outcomes of a check, as the relay's front sees them.
    public enum CheckResult: Equatable, Sendable {
        case ok
        case malformed
        case badMAC
        case expired
    }

    /// Bytes in a token ID; its text form is twice as many hex digits.
    public static let idLength = 8

    /// Mints a token for `deviceID` valid until `expiresUnix` (seconds since 1970), named by
    /// `tokenID` (``idLength`` bytes), by default a fresh random one.
    public static func mint(
        tokenKey: [UInt8], deviceID: String, deviceKey: [UInt8], expiresUnix: UInt64,
        tokenID chosen: [UInt8]? = nil
    ) throws(CryptoError) -> String {
        guard tokenKey.count == RelayCrypto.tokenKeyLength else {
            throw .badLength("token key", tokenKey.count, RelayCrypto.tokenKeyLength)
        }
        guard deviceKey.count == RelayCrypto.deviceKeyLength else {
            throw .badLength("device key", deviceKey.count, RelayCrypto.deviceKeyLength)
        }
        let tokenID: [UInt8]
        if let chosen { tokenID = chosen } else { tokenID = try RelayCrypto.randomBytes(idLength) }
        guard tokenID.count == idLength else { throw .badLength("token ID", tokenID.count, idLength) }
        var out = [CChar](repeating: 0, count: Int(RL_TOKEN_MAX))
        let outCount = out.count
        let rc = out.withUnsafeMutableBufferPointer { buffer in
            rl_token_mint(tokenKey, deviceID, deviceKey, expiresUnix, tokenID, buffer.baseAddress, outCount)
        }
        guard rc == 0 else { throw .mintFailed(deviceID) }
        return String(cBuffer: out)
    }

    /// Checks `token` for `deviceID`/`deviceKey` at `nowUnix`. Also returns the device the
    /// token names, which the C side parses even when the check fails.
    public static func check(
        tokenKey: [UInt8], token: String, deviceID: String, deviceKey: [UInt8], nowUnix: UInt64
    ) -> (result: CheckResult, tokenDevice: String) {
        precondition(tokenKey.count == RelayCrypto.tokenKeyLength && deviceKey.count == RelayCrypto.deviceKeyLength)
        var tokenDevice = [CChar](repeating: 0, count: Int(RL_ID_MAX) + 1)
        var token = token
        let rc = token.withUTF8 { utf8 in
            utf8.withMemoryRebound(to: CChar.self) { text in
                tokenDevice.withUnsafeMutableBufferPointer { device in
                    rl_token_check(
                        tokenKey, text.baseAddress, text.count, deviceID, deviceKey, nowUnix, device.baseAddress)
                }
            }
        }
        let result: CheckResult
        switch Int(rc) {
        case Int(RL_TOKEN_OK): result = .ok
        case Int(RL_TOKEN_BAD_MAC): result = .badMAC
        case Int(RL_TOKEN_EXPIRED): result = .expired
        default: result = .malformed
        }
        return (result, String(cBuffer: tokenDevice))
    }

    /// The token ID that `text` names, as 16 lowercase hex digits: `text` is either the ID
    /// itself (any case) or a whole token, whose third field it is. Nil for anything else.
    public static func id(in text: String) -> String? {
        let fields = text.split(separator: ".", omittingEmptySubsequences: false)
        let candidate = fields.count == 4 ? String(fields[2]) : text
        guard candidate.utf8.count == 2 * idLength, let bytes = Hex.decode(candidate) else { return nil }
        return Hex.encode(bytes)
    }
}
