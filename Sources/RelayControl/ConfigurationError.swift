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

    public var description: String {
        guard let origin, origin != flag else { return "\(flag): \(message)" }
        return "\(key) (from \(origin)): \(message)"
    }
}
