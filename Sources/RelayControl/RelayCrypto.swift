import CRelayCore

/// Swift faces of the C crypto helpers, so that the store, the CLI and the tests share one
/// implementation with the relay and the agent (the wire format must agree byte for byte).
public enum RelayCrypto {
    public static let secretLength = Int(RL_SECRET_LEN)
    public static let deviceKeyLength = Int(RL_KEY_LEN)
    public static let tokenKeyLength = Int(RL_TOKEN_KEY_LEN)

    /// `count` bytes from OpenSSL's CSPRNG.
    public static func randomBytes(_ count: Int) throws(CryptoError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let rc = bytes.withUnsafeMutableBufferPointer { rl_random_bytes($0.baseAddress, $0.count) }
        guard rc == 0 else { throw .randomUnavailable }
        return bytes
    }

    /// K = first 16 bytes of HMAC-SHA256(secret, "relay device key v1").
    public static func deviceKey(secret: [UInt8]) throws(CryptoError) -> [UInt8] {
        guard secret.count == secretLength else { throw .badLength("device secret", secret.count, secretLength) }
        var key = [UInt8](repeating: 0, count: deviceKeyLength)
        let rc = secret.withUnsafeBufferPointer { s in
            key.withUnsafeMutableBufferPointer { rl_derive_device_key(s.baseAddress, $0.baseAddress) }
        }
        guard rc == 0 else { throw .derivationFailed }
        return key
    }

    /// Whether `id` is a valid device ID: 1 to 63 of [a-z0-9-], not starting or ending with '-'.
    public static func isValidDeviceID(_ id: String) -> Bool {
        var id = id
        return id.withUTF8 { utf8 in
            utf8.withMemoryRebound(to: CChar.self) { rl_device_id_valid($0.baseAddress, $0.count) == 1 }
        }
    }
}

/// Failures of the crypto helpers; none is expected on a healthy machine.
public enum CryptoError: Error, CustomStringConvertible, Equatable {
    case randomUnavailable
    case derivationFailed
    case badLength(String, Int, Int)
    case mintFailed(String)

    public var description: String {
        switch self {
        case .randomUnavailable:
            return "the system random generator failed; check that OpenSSL can seed itself (/dev/urandom)"
        case .derivationFailed:
            return "deriving the device key failed (OpenSSL HMAC error)"
        case .badLength(let what, let got, let want):
            return "\(what) is \(got) bytes; it must be \(want)"
        case .mintFailed(let id):
            return "could not mint a token for device '\(id)'"
        }
    }
}
