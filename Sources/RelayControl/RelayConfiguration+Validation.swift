import Glibc

/// Cross-field checks, run before anything is opened or bound, so that a bad flag fails
/// fast with a message instead of a relay that misbehaves later.
extension RelayConfiguration {
    /// Errors name the flag, or the key and its origin when a variable or the file set it.
    public func validate() throws(ConfigurationError) {
        do {
            try validateFields()
        } catch var error {
            error.origin = error.origin ?? origins[error.key]
            throw error
        }
    }

    private func validateFields() throws(ConfigurationError) {
        if dataDirectory.isEmpty { throw ConfigurationError(flag: "--data", "the data directory must not be empty") }
        try validateAddresses()
        try validateRanges()
        try validateDomain()
        try validateTLS()
        try validateCluster()
    }

    private func validateTLS() throws(ConfigurationError) {
        if tlsCerts.count != tlsKeys.count {
            throw ConfigurationError(
                flag: "--tls-key", "give one key per certificate (\(tlsCerts.count) certificates, \(tlsKeys.count) keys)")
        }
        if tlsCerts.count > 16 { throw ConfigurationError(flag: "--tls-cert", "at most 16 certificates") }
        if tlsCerts.isEmpty && !(https ?? []).isEmpty {
            throw ConfigurationError(flag: "--https", "HTTPS listeners need --tls-cert and --tls-key")
        }
        if tlsCerts.isEmpty && deviceCA != nil {
            throw ConfigurationError(flag: "--device-ca", "device certificates need TLS: give --tls-cert and --tls-key")
        }
    }

    /// A numeric address's bytes (4 or 16), brackets allowed; nil for anything else.
    static func ipBytes(_ text: String) -> [UInt8]? {
        let bare = text.hasPrefix("[") && text.hasSuffix("]") ? String(text.dropFirst().dropLast()) : text
        var v4 = in_addr()
        if inet_pton(AF_INET, bare, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, bare, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    /// Whether a listener on `host` is bound to one of the floating addresses.
    public func isFloating(host: String) -> Bool {
        guard let bytes = Self.ipBytes(host) else { return false }
        return floating.contains { Self.ipBytes($0) == bytes }
    }

    private func validateAddresses() throws(ConfigurationError) {
        if let admin, ListenAddress(admin) == nil {
            throw ConfigurationError(
                flag: "--admin", "'\(admin)' is not HOST:PORT or [IPV6]:PORT with a port from 0 to 65535, or off")
        }
        for ip in floating where Self.ipBytes(ip) == nil {
            throw ConfigurationError(flag: "--floating", "'\(ip)' is not an IPv4 or IPv6 address (no port, no name)")
        }
        for kind in ListenerKind.allCases {
            let addresses = self.addresses(kind)
            if addresses.isEmpty && kind != .metrics && kind != .https {
                throw ConfigurationError(flag: kind.flag, "at least one address is needed")
            }
            for address in addresses where ListenAddress(address) == nil {
                throw ConfigurationError(
                    flag: kind.flag, "'\(address)' is not HOST:PORT or [IPV6]:PORT with a port from 0 to 65535")
            }
        }
    }

    /// Each setting's own range (settingsTable), durations first, then what holds between them.
    private func validateRanges() throws(ConfigurationError) {
        let table = Self.settingsTable
        for setting in table where setting.isDuration {
            try setting.check(self)
        }
        if keepalive >= period {
            throw ConfigurationError(
                flag: "--keepalive",
                "must be shorter than --period (got keepalive \(keepalive.wholeSeconds)s, period \(period.wholeSeconds)s); "
                    + "keepalives hold the NAT mapping open between the period's notifies")
        }
        for setting in table where !setting.isDuration {
            try setting.check(self)
        }
    }

    /// Host routing makes `<id>.<domain>` a host name, so the domain must be one too.
    private func validateDomain() throws(ConfigurationError) {
        guard !domain.isEmpty else { return }
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
        let validLabel: (Substring) -> Bool = { label in
            !label.isEmpty && label.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-")
                && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
        if domain.count > 253 - 64 || !labels.allSatisfy(validLabel) {
            throw ConfigurationError(
                flag: "--domain",
                "'\(domain)' is not a host name (dot-separated labels of letters, digits and '-'); use \"\" to turn host routing off"
            )
        }
    }
}
