import XCTest

@testable import RelayControl

final class DurationsTests: XCTestCase {
    func testValidDurations() throws {
        XCTAssertEqual(try Durations.parse("90"), .seconds(90), "a bare number is seconds")
        XCTAssertEqual(try Durations.parse("30s"), .seconds(30))
        XCTAssertEqual(try Durations.parse("15m"), .seconds(900))
        XCTAssertEqual(try Durations.parse("24h"), .seconds(86_400))
        XCTAssertEqual(try Durations.parse("7d"), .seconds(604_800))
        XCTAssertEqual(try Durations.parse("500ms"), .milliseconds(500))
        XCTAssertEqual(try Durations.parse("0"), .zero)
        XCTAssertEqual(try Durations.parse(" 5s "), .seconds(5), "surrounding spaces are ignored")
    }

    func testWholeSeconds() throws {
        XCTAssertEqual(try Durations.seconds("2m"), 120)
        XCTAssertEqual(try Durations.seconds("3000ms"), 3)
        XCTAssertThrowsError(try Durations.seconds("1500ms")) { error in
            XCTAssertTrue("\(error)".contains("whole number of seconds"), "\(error)")
        }
    }

    func testInvalidDurationsNameTheValue() {
        for text in ["", "abc", "5x", "-5", "+5", "1.5s", "s", "ms", "5 m", "5S", "m5", "99999999999999999999", "9999999999999999d"] {
            XCTAssertThrowsError(try Durations.parse(text), "'\(text)'") { error in
                XCTAssertEqual((error as? Durations.ParseError)?.text, text)
                XCTAssertTrue("\(error)".hasPrefix("'\(text)' is not a duration"), "\(error)")
            }
        }
    }

    func testMillisecondAndSecondViews() {
        XCTAssertEqual(Duration.milliseconds(1500).wholeMilliseconds, 1500)
        XCTAssertEqual(Duration.milliseconds(1500).wholeSeconds, 1)
        XCTAssertEqual(Duration.seconds(300).wholeMilliseconds, 300_000)
    }
}
