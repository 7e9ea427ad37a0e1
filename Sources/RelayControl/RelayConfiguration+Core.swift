import CRelayCore

extension RelayConfiguration {
    /// The C core's view of this configuration: the core's own defaults first (so that a
    /// field added to rl_core_config later still gets a sane value), then every setting
    /// that has a core field (settingsTable). Call after ``validate()``: the narrowing
    /// conversions rely on its ranges.
    ///
    /// `domain` must point at a copy of ``domain`` that outlives the core; ``RelayCore``
    /// keeps one.
    func coreConfig(tokenKey: [UInt8], domain: UnsafePointer<CChar>?) -> rl_core_config {
        precondition(tokenKey.count == RelayCrypto.tokenKeyLength, "token key must be 32 bytes")
        var config = rl_core_config()
        rl_core_config_defaults(&config)
        for setting in Self.settingsTable { setting.toCore?(&config, self) }
        config.domain = domain
        withUnsafeMutableBytes(of: &config.token_key) { $0.copyBytes(from: tokenKey) }
        return config
    }
}
