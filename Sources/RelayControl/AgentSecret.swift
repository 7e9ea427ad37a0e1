/// The device secret as users type it: the 64 hex digits `relay device add` printed.
public enum AgentSecret {
    /// Describes the bad value without echoing it: it may be a real secret, slightly mangled.
    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public let length: Int

        public var description: String { "--key \(reason)" }

        /// Why, without naming the flag (the value may come from a variable or a file).
        public var reason: String {
            let what = length == 2 * RelayCrypto.secretLength ? "not all hex digits" : "\(length) characters"
            return "must be the 64 hex digit secret that `relay device add` printed (the value given is \(what))"
        }
    }

    public static func parse(_ text: String) throws(ParseError) -> [UInt8] {
        let trimmed = text.trimmingWhitespace()
        guard trimmed.count == 2 * RelayCrypto.secretLength, let bytes = Hex.decode(trimmed) else {
            throw ParseError(length: trimmed.count)
        }
        return bytes
    }
}
