import XCTest

@testable import RelayControl

/// `--floating`: which listeners are bound with IP_FREEBIND, and what is refused.
final class FloatingAddressTests: XCTestCase {
    func testListenersOnAFloatingAddressAreRecognised() throws {
        var configuration = RelayConfiguration(environment: [:])
        configuration.floating = ["198.51.100.11", "2001:db8::11"]
        try configuration.validate()
        XCTAssertTrue(configuration.isFloating(host: "198.51.100.11"))
        XCTAssertTrue(configuration.isFloating(host: "[2001:db8:0::11]"), "compared as addresses, not text")
        XCTAssertFalse(configuration.isFloating(host: "198.51.100.12"))
        XCTAssertFalse(configuration.isFloating(host: "localhost"))
        XCTAssertFalse(configuration.isFloating(host: "127.0.0.1"))
    }

    func testOnlyNumericAddressesAreAccepted() {
        for bad in ["relay.example", "198.51.100.11:4700", "198.51.100.300", ""] {
            var configuration = RelayConfiguration(environment: [:])
            configuration.floating = [bad]
            XCTAssertThrowsError(try configuration.validate(), bad) { error in
                XCTAssertTrue("\(error)".contains("--floating"), "\(error)")
            }
        }
    }
}
