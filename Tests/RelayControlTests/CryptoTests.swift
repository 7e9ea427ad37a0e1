import XCTest

@testable import RelayControl

final class CryptoTests: XCTestCase {
    func testDeviceIDRules() {
        let valid = ["a", "0", "cam-1", "a-b-c", "9lives", String(repeating: "z", count: 63)]
        for id in valid { XCTAssertTrue(RelayCrypto.isValidDeviceID(id), id) }
        let invalid = ["", "-", "-a", "a-", "A", "cam_1", "a.b", "a b", "é", String(repeating: "z", count: 64)]
        for id in invalid { XCTAssertFalse(RelayCrypto.isValidDeviceID(id), id) }
    }

    func testDeviceKeyDerivationMatchesTheProtocol() throws {
        // K = HMAC-SHA256(secret, "relay device key v1")[0..16]; vector computed with Python's hmac.
        let secret = [UInt8](0..<32)
        let key = try RelayCrypto.deviceKey(secret: secret)
        XCTAssertEqual(Hex.encode(key), "14485ea4c40840c162ee238bc701fa57")
        XCTAssertThrowsError(try RelayCrypto.deviceKey(secret: [1, 2, 3]))
    }

    func testRandomBytes() throws {
        let a = try RelayCrypto.randomBytes(32), b = try RelayCrypto.randomBytes(32)
        XCTAssertEqual(a.count, 32)
        XCTAssertNotEqual(a, b)
    }

    func testHexRoundTrip() {
        let bytes: [UInt8] = [0x00, 0x0f, 0xa5, 0xff]
        XCTAssertEqual(Hex.encode(bytes), "000fa5ff")
        XCTAssertEqual(Hex.decode("000fa5ff"), bytes)
        XCTAssertEqual(Hex.decode("000FA5FF"), bytes)
        XCTAssertNil(Hex.decode("abc"))
        XCTAssertNil(Hex.decode("zz"))
    }

    func testAgentSecretParsing() throws {
        let secret = try RelayCrypto.randomBytes(32)
        XCTAssertEqual(try AgentSecret.parse(Hex.encode(secret)), secret)
        XCTAssertEqual(try AgentSecret.parse(Hex.encode(secret).uppercased() + "\n"), secret)
        for bad in ["", "abcd", String(repeating: "g", count: 64), Hex.encode(secret) + "00"] {
            XCTAssertThrowsError(try AgentSecret.parse(bad)) { error in
                XCTAssertTrue("\(error)".contains("64 hex digit"), "\(error)")
                XCTAssertFalse("\(error)".contains(bad.isEmpty ? "\u{0}" : bad), "never echoes the value")
            }
        }
    }
}
