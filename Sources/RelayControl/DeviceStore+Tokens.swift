import Foundation

extension DeviceStore {
    /// A token for `id` valid for `ttl` from `now`, signed with this store's token key and
    /// bound to the device's current key.
    public func mintToken(id: String, ttl: Duration, now: Date = Date()) throws -> String {
        let deviceKey = try key(for: id)
        let expires = UInt64(now.timeIntervalSince1970) + UInt64(ttl.components.seconds)
        return try Tokens.mint(tokenKey: tokenKey(), deviceID: id, deviceKey: deviceKey, expiresUnix: expires)
    }
}
