import XCTest

@testable import RelayControl

/// The PostgreSQL backend's pure parts; the backend itself runs against a real server in
/// Tests/integration/test_store_postgres.py.
final class PostgresStoreTests: XCTestCase {
    func testPlaceholdersAreNumberedOutsideLiterals() {
        XCTAssertEqual(
            PostgresConnection.numbered("SELECT a FROM t WHERE b = ? AND c = '?' AND d > ?"),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND d > $2")
        XCTAssertEqual(PostgresConnection.numbered("SELECT 1"), "SELECT 1")
    }

    func testByteaHexIsDecoded() {
        XCTAssertEqual(PostgresConnection.byteaHex("\\x00ff10"), [0x00, 0xFF, 0x10])
        XCTAssertEqual(PostgresConnection.byteaHex("\\x"), [])
    }

    func testURLsAreShownWithoutTheirPassword() {
        for url in [
            "postgres://relay:s3cret@db.example:5433/fleet",
            "postgresql://relay:s3cret@db.example:5433/fleet?sslmode=verify-full",
            "postgres://relay@db.example:5433/fleet?password=s3cret",
        ] {
            let shown = DeviceStore.displayName(url)
            XCTAssertFalse(shown.contains("s3cret"), shown)
            XCTAssertEqual(shown, "postgres://relay@db.example:5433/fleet")
        }
        XCTAssertEqual(DeviceStore.displayName("sqlite"), "sqlite")
    }

    func testAnUnknownStoreIsRefused() throws {
        let directory = try makeTemporaryDirectory(self) + "/data"
        XCTAssertThrowsError(try DeviceStore(directory: directory, store: "mysql://relay:pw@h/db")) { error in
            XCTAssertEqual(error as? DeviceStoreError, .unknownStore("mysql://relay:pw@h/db"))
            XCTAssertFalse("\(error)".contains("pw@"), "\(error)")
        }
    }

    func testTheStoreSettingIsChecked() {
        var configuration = RelayConfiguration(environment: [:])
        configuration.store = "redis://x"
        XCTAssertThrowsError(try configuration.validate())
        configuration.store = "postgres://relay@127.0.0.1/relay"
        XCTAssertNoThrow(try configuration.validate())
    }
}
