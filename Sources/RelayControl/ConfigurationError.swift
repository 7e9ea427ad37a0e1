/// A configuration value that cannot work, naming the flag to change and why.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    /// The CLI flag that sets the value, e.g. "--keepalive".
    public let flag: String
    public let message: String

    public init(flag: String, _ message: String) {
        self.flag = flag
        self.message = message
    }

    public var description: String { "\(flag): \(message)" }
}
