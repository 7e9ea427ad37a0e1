import CRelayCore

extension RelayConfiguration {
    /// The C core's view of this configuration: the core's own defaults first (so that a
    /// field added to rl_core_config later still gets a sane value), then every value set
    /// here. Call after ``validate()``: the narrowing conversions rely on its ranges.
    ///
    /// `domain` must point at a copy of ``domain`` that outlives the core; ``RelayCore``
    /// keeps one.
    func coreConfig(tokenKey: [UInt8], domain: UnsafePointer<CChar>?) -> rl_core_config {
        precondition(tokenKey.count == RelayCrypto.tokenKeyLength, "token key must be 32 bytes")
        var config = rl_core_config()
        rl_core_config_defaults(&config)
        config.period_s = UInt32(period.wholeSeconds)
        config.keepalive_s = UInt32(keepalive.wholeSeconds)
        config.capacity = UInt32(capacity)
        config.max_sessions = UInt32(maxSessions)
        config.wake_timeout_ms = UInt32(wakeTimeout.wholeMilliseconds)
        config.idle_link_s = UInt32(idleLink.wholeSeconds)
        config.max_header_bytes = UInt32(maxHeaderBytes)
        config.header_timeout_ms = UInt32(headerTimeout.wholeMilliseconds)
        config.max_conns_per_source = UInt32(maxConnsPerSource)
        config.conn_rate_per_source = UInt32(connRatePerSource)
        config.max_callbacks_per_source = UInt32(maxCallbacksPerSource)
        config.max_sessions_per_device = UInt32(maxSessionsPerDevice)
        config.wakes_per_device_minute = UInt32(wakesPerDeviceMinute)
        config.idle_timeout_s = UInt32(idleTimeout.wholeSeconds)
        config.domain = domain
        withUnsafeMutableBytes(of: &config.token_key) { $0.copyBytes(from: tokenKey) }
        return config
    }
}
