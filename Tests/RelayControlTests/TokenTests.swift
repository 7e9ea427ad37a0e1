import Foundation
import XCTest

@testable import RelayControl

final class TokenTests: XCTestCase {
    private let tokenKey = (0..<32).map { UInt8($0 * 7 & 0xff) }
    private let secret = (0..<32).map { UInt8(255 - $0) }
    private let now: UInt64 = 1_700_000_000

    private func deviceKey() throws -> [UInt8] { try RelayCrypto.deviceKey(secret: secret) }

    private func mint(_ id: String = "cam-1", expires: UInt64? = nil) throws -> String {
        try Tokens.mint(tokenKey: tokenKey, deviceID: id, deviceKey: deviceKey(), expiresUnix: expires ?? now + 3600)
    }

    private func check(_ token: String, id: String = "cam-1", key: [UInt8]? = nil, at time: UInt64? = nil) throws
        -> (result: Tokens.CheckResult, tokenDevice: String)
    {
        Tokens.check(tokenKey: tokenKey, token: token, deviceID: id, deviceKey: try key ?? deviceKey(), nowUnix: time ?? now)
    }

    func testTokenShape() throws {
        let token = try mint()
        let parts = token.split(separator: ".")
        XCTAssertEqual(parts.count, 4, token)
        XCTAssertEqual(parts[0], "cam-1")
        XCTAssertEqual(parts[1], "\(now + 3600)")
        XCTAssertEqual(parts[2].count, 16)
        XCTAssertNotNil(Hex.decode(String(parts[2])))
        XCTAssertEqual(parts[3].count, 22, "16 bytes of base64url without padding")
        XCTAssertNotEqual(try mint(), token, "each token has its own random ID")
    }

    func testRoundTrip() throws {
        let result = try check(try mint())
        XCTAssertEqual(result.result, .ok)
        XCTAssertEqual(result.tokenDevice, "cam-1")
    }

    func testExpired() throws {
        let token = try mint(expires: now - 1)
        XCTAssertEqual(try check(token).result, .expired)
        XCTAssertEqual(try check(try mint(expires: now)).result, .ok, "valid through its expiry second")
    }

    func testWrongDeviceKeyIsABadMAC() throws {
        // What re-provisioning a device (a new secret) does to its old tokens.
        let otherKey = try RelayCrypto.deviceKey(secret: [UInt8](repeating: 1, count: 32))
        XCTAssertEqual(try check(try mint(), key: otherKey).result, .badMAC)
    }

    func testTokenForAnotherDeviceIsRefusedButNamesItsDevice() throws {
        let result = try check(try mint("cam-2"), id: "cam-1")
        XCTAssertEqual(result.result, .badMAC)
        XCTAssertEqual(result.tokenDevice, "cam-2")
    }

    func testTamperedTokensAreRefused() throws {
        let token = try mint()
        var parts = token.split(separator: ".").map(String.init)

        var laterExpiry = parts
        laterExpiry[1] = "\(now + 999_999)"
        XCTAssertEqual(try check(laterExpiry.joined(separator: ".")).result, .badMAC)

        var otherID = parts
        otherID[2] = String(otherID[2].reversed())
        if otherID[2] != parts[2] { XCTAssertEqual(try check(otherID.joined(separator: ".")).result, .badMAC) }

        let last = parts[3].removeLast()
        parts[3].append(last == "A" ? "B" : "A")
        XCTAssertEqual(try check(parts.joined(separator: ".")).result, .badMAC)
    }

    func testMalformedTokens() throws {
        let token = try mint()
        for bad in ["", "garbage", "cam-1", "cam-1.123", "cam-1.x.0011223344556677.AAAAAAAAAAAAAAAAAAAAAA",
                    String(token.dropLast()), token + "A", "Cam-1" + token.dropFirst(5)] {
            XCTAssertEqual(try check(bad).result, .malformed, bad)
        }
    }

    func testStoreMintsTokensBoundToTheCurrentKey() throws {
        let store = try DeviceStore(directory: try makeTemporaryDirectory(self))
        _ = try store.add(id: "cam-1")
        let issued = Date(timeIntervalSince1970: TimeInterval(now))
        let token = try store.mintToken(id: "cam-1", ttl: .seconds(24 * 3600), now: issued)
        XCTAssertTrue(token.hasPrefix("cam-1.\(now + 86_400)."), token)

        let verify = { (at: UInt64) in
            Tokens.check(tokenKey: try store.tokenKey(), token: token, deviceID: "cam-1",
                         deviceKey: try store.key(for: "cam-1"), nowUnix: at).result
        }
        XCTAssertEqual(try verify(now + 86_400 - 1), .ok)
        XCTAssertEqual(try verify(now + 86_401), .expired)

        // Re-adding the device (new secret, new K) invalidates the old token.
        try store.remove(id: "cam-1")
        _ = try store.add(id: "cam-1")
        XCTAssertEqual(try verify(now), .badMAC)

        XCTAssertThrowsError(try store.mintToken(id: "ghost", ttl: .seconds(60))) { error in
            XCTAssertEqual(error as? DeviceStoreError, .noSuchDevice("ghost"))
        }
    }
}
