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
        try validateTimers()
        try validateLimits()
        try validateDomain()
        try validateTLS()
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

    private func validateAddresses() throws(ConfigurationError) {
        if let admin, ListenAddress(admin) == nil {
            throw ConfigurationError(
                flag: "--admin", "'\(admin)' is not HOST:PORT or [IPV6]:PORT with a port from 0 to 65535, or off")
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

    private func validateTimers() throws(ConfigurationError) {
        try requireWholeSeconds(period, "--period")
        try requireWholeSeconds(keepalive, "--keepalive")
        try requireWholeSeconds(idleLink, "--idle-link")
        if period < .seconds(2) {
            throw ConfigurationError(flag: "--period", "must be at least 2 seconds (agents notify every period / 2)")
        }
        if keepalive < .seconds(1) {
            throw ConfigurationError(flag: "--keepalive", "must be at least 1 second")
        }
        if keepalive >= period {
            throw ConfigurationError(
                flag: "--keepalive",
                "must be shorter than --period (got keepalive \(keepalive.wholeSeconds)s, period \(period.wholeSeconds)s); "
                    + "keepalives hold the NAT mapping open between the period's notifies")
        }
        try requireMilliseconds(wakeTimeout, "--wake-timeout")
        try requireMilliseconds(headerTimeout, "--header-timeout")
        try requireWholeSeconds(idleTimeout, "--idle-timeout")
        if idleTimeout < .zero {
            throw ConfigurationError(flag: "--idle-timeout", "must be 0 (no limit) or more")
        }
        if drainTimeout < .zero || drainTimeout > .seconds(3600) {
            throw ConfigurationError(flag: "--drain-timeout", "must be from 0 to 1h")
        }
        if idleLink < .zero || idleLink.wholeSeconds > Int64(UInt32.max) {
            throw ConfigurationError(flag: "--idle-link", "must be from 0 to \(UInt32.max) seconds")
        }
    }

    private func validateLimits() throws(ConfigurationError) {
        if capacity < 1 || capacity > Int(UInt32.max) {
            throw ConfigurationError(flag: "--capacity", "must be from 1 to \(UInt32.max) devices")
        }
        if maxSessions < 1 || maxSessions > Int(UInt32.max) {
            throw ConfigurationError(flag: "--max-sessions", "must be from 1 to \(UInt32.max)")
        }
        for (value, flag) in [
            (maxConnsPerSource, "--max-conns-per-source"), (connRatePerSource, "--conn-rate-per-source"),
            (maxCallbacksPerSource, "--max-callbacks-per-source"),
            (maxSessionsPerDevice, "--max-sessions-per-device"), (wakesPerDeviceMinute, "--wakes-per-device-minute"),
        ] where value < 0 || value > Int(UInt32.max) {
            throw ConfigurationError(flag: flag, "must be from 0 (no limit) to \(UInt32.max)")
        }
        if maxHeaderBytes < 1024 || maxHeaderBytes > 1 << 20 {
            throw ConfigurationError(flag: "--max-header-bytes", "must be from 1024 to 1048576 bytes")
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

    private func requireWholeSeconds(_ value: Duration, _ flag: String) throws(ConfigurationError) {
        if value.components.attoseconds != 0 {
            throw ConfigurationError(flag: flag, "must be a whole number of seconds")
        }
        if value.wholeSeconds > Int64(UInt32.max) {
            throw ConfigurationError(flag: flag, "is too large")
        }
    }

    private func requireMilliseconds(_ value: Duration, _ flag: String) throws(ConfigurationError) {
        if value.wholeMilliseconds < 1 || value.wholeMilliseconds > Int64(UInt32.max) {
            throw ConfigurationError(flag: flag, "must be from 1ms to \(UInt32.max)ms")
        }
    }
}
