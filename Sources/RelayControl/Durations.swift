/// Parses the durations the CLI accepts: a whole number with an optional unit.
///
/// "90" and "90s" are 90 seconds; "500ms", "15m", "24h" and "7d" work as expected. Integers
/// only, so that what an operator types is exactly what the relay uses.
public enum Durations {
    /// Why a duration did not parse; the message names the text that was given.
    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public let text: String
        public let reason: String

        public var description: String {
            "'\(text)' is not a duration (\(reason)); use a whole number with an optional unit: ms, s, m, h or d, e.g. 90, 30s, 15m, 24h, 7d"
        }
    }

    private static let unitMilliseconds: [(suffix: String, milliseconds: Int64)] = [
        // "ms" comes before "m" and "s" so that the longest suffix wins.
        ("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000),
    ]

    /// The duration `text` names; a bare number is seconds.
    public static func parse(_ text: String) throws(ParseError) -> Duration {
        let trimmed = text.trimmingWhitespace()
        guard !trimmed.isEmpty else { throw ParseError(text: text, reason: "it is empty") }

        var digits = Substring(trimmed)
        var scale: Int64 = 1000
        for unit in unitMilliseconds where trimmed.hasSuffix(unit.suffix) {
            digits = trimmed.dropLast(unit.suffix.count)
            scale = unit.milliseconds
            break
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw ParseError(text: text, reason: "expected digits followed by a unit")
        }
        guard let count = Int64(digits) else { throw ParseError(text: text, reason: "the number is too large") }
        let (milliseconds, overflow) = count.multipliedReportingOverflow(by: scale)
        guard !overflow else { throw ParseError(text: text, reason: "the number is too large") }
        return .milliseconds(milliseconds)
    }

    /// The duration `text` names, in whole seconds; "1500ms" is refused rather than rounded.
    public static func seconds(_ text: String) throws(ParseError) -> Int64 {
        let duration = try parse(text)
        guard duration.components.attoseconds == 0 else {
            throw ParseError(text: text, reason: "it must be a whole number of seconds")
        }
        return duration.components.seconds
    }
}

extension Duration {
    /// Whole milliseconds, rounded down; what the C core's `*_ms` fields take.
    var wholeMilliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }

    /// Whole seconds, rounded down; what the C core's `*_s` fields take.
    var wholeSeconds: Int64 { components.seconds }

    /// As `relay check-config` and the docs write it: "300s", or "1500ms" when not whole.
    var configText: String {
        components.attoseconds == 0 ? "\(components.seconds)s" : "\(wholeMilliseconds)ms"
    }
}

extension String {
    func trimmingWhitespace() -> String {
        String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}
