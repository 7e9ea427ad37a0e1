/// A listen address "HOST:PORT" or "[V6]:PORT", as rl_core_listen takes it.
public struct ListenAddress: Equatable, Sendable, CustomStringConvertible {
    /// The host as written, brackets included for IPv6.
    public let host: String
    public let port: UInt16

    /// Parses `text`; nil when it is not HOST:PORT with a port from 0 to 65535.
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        let host = String(text[..<colon])
        guard let port = UInt16(text[text.index(after: colon)...]), !host.isEmpty else { return nil }
        if host.hasPrefix("[") {
            guard host.hasSuffix("]"), host.count > 2 else { return nil }
        } else if host.contains(":") {
            // A bare IPv6 address is ambiguous with its port: it must be bracketed.
            return nil
        }
        self.host = host
        self.port = port
    }

    init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    public var isIPv6: Bool { host.hasPrefix("[") }

    public var description: String { "\(host):\(port)" }

    /// The same host with the port the socket actually got (port 0 picks one).
    func withPort(_ port: UInt16) -> ListenAddress { ListenAddress(host: host, port: port) }
}
