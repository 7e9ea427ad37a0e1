/// A configuration value that cannot work, naming the setting to change and why.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    /// The CLI flag that sets the value, e.g. "--keepalive".
    public let flag: String
    public let message: String
    /// Where the value came from when not from the flag: "RELAY_KEEPALIVE" or a file path.
    public var origin: String?

    public init(flag: String, _ message: String, origin: String? = nil) {
        self.flag = flag
        self.message = message
        self.origin = origin
    }

    /// The setting's name in a config file and (upper-cased) in the environment: the flag
    /// without its dashes.
    public var key: String { String(flag.drop { $0 == "-" }) }

    /// One line whatever the value held: a quoted YAML string may carry line breaks, and a
    /// message that spans lines could forge log lines (found by `make fuzz-config`).
    public var description: String {
        let text = origin == nil || origin == flag ? "\(flag): \(message)" : "\(key) (from \(origin!)): \(message)"
        return Self.oneLine(text)
    }

    static func oneLine(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7f || (0x80..<0xa0).contains(scalar.value)
                || scalar == "\u{2028}" || scalar == "\u{2029}":
                out += "\\u{\(String(scalar.value, radix: 16))}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
