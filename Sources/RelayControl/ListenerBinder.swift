import Logging

/// The addresses the core actually listens on, per kind, with resolved ports.
public struct BoundListeners: Sendable {
    public var addresses: [ListenerKind: [ListenAddress]] = [:]

    public func addresses(_ kind: ListenerKind) -> [ListenAddress] { addresses[kind] ?? [] }

    /// "127.0.0.1:8080,[::1]:8080" for one kind, as the relay.ready line shows it.
    public func joined(_ kind: ListenerKind) -> String {
        addresses(kind).map(\.description).joined(separator: ",")
    }
}

/// Binds every configured listener on the core.
///
/// An explicitly given address that cannot be bound is fatal: the operator asked for it.
/// A default IPv6 address ([::1]) is only a convenience, so on a host without IPv6 it is
/// skipped with a warning and the relay runs on IPv4 alone.
enum ListenerBinder {
    static func bindAll(
        _ configuration: RelayConfiguration, on core: RelayCore, logger: Logger
    ) throws -> BoundListeners {
        var bound = BoundListeners()
        for kind in ListenerKind.allCases {
            let optionalIPv6 = configuration.usesDefaultAddresses(kind)
            var addresses: [ListenAddress] = []
            for text in configuration.addresses(kind) {
                guard let address = ListenAddress(text) else {
                    throw ConfigurationError(flag: kind.flag, "'\(text)' is not HOST:PORT or [IPV6]:PORT")
                }
                do {
                    let port = try core.listen(
                        kind, address: text, floating: configuration.isFloating(host: address.host))
                    addresses.append(address.withPort(port))
                } catch let error as CoreError where optionalIPv6 && address.isIPv6 {
                    logger.warning(
                        "listener.skipped",
                        metadata: [
                            "listener": "\(kind.name)", "address": "\(text)", "error": "\(error.message)",
                        ])
                }
            }
            bound.addresses[kind] = addresses
        }
        return bound
    }
}
