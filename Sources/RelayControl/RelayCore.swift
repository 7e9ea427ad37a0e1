import CRelayCore

/// Owns one C relay core (rl_core): the data plane's loop thread and everything on it.
///
/// Setup (`listen`, `start`) happens on one task before the services run; after that the
/// header makes device put/remove, token revocation, stats, records, ready and stop safe
/// from any thread, which is why this class can be shared between services.
public final class RelayCore: @unchecked Sendable {
    private let core: OpaquePointer
    /// The rl_core, for the inspection calls (RelayCore+Inspect.swift).
    var pointer: OpaquePointer { core }
    // rl_core_config.domain points into this; it must outlive the core.
    private let domain: OwnedCString

    /// Creates a stopped core for `configuration` (already validated) signing tokens
    /// with `tokenKey`.
    public init(configuration: RelayConfiguration, tokenKey: [UInt8]) throws {
        let domain = OwnedCString(configuration.domain)
        var config = configuration.coreConfig(tokenKey: tokenKey, domain: domain.pointer)
        core = try callReturningPointer("create the relay core") { rl_core_new(&config, $0, $1) }
        self.domain = domain
        // The config held a copy of the token key on the stack; don't leave it behind.
        _ = withUnsafeMutableBytes(of: &config.token_key) { $0.initializeMemory(as: UInt8.self, repeating: 0) }
    }

    deinit {
        rl_core_stop(core)
        rl_core_free(core)
    }

    /// Binds one listener and returns the port it got (useful with port 0).
    /// `floating`: the address may not be on an interface yet (IP_FREEBIND).
    public func listen(_ kind: ListenerKind, address: String, floating: Bool = false) throws -> UInt16 {
        let index = try callReturningStatus("\(kind.flag) \(address)") {
            rl_core_listen_opts(core, kind.cKind, address, floating ? UInt32(RL_LISTEN_FREEBIND) : 0, $0, $1)
        }
        let port = rl_core_bound_port(core, kind.cKind, index)
        guard port > 0, port <= Int32(UInt16.max) else {
            throw CoreError(operation: "\(kind.flag) \(address)", message: "the core reported no bound port")
        }
        return UInt16(port)
    }

    /// Adds or replaces a device; false when the core refused it (registry full or bad ID).
    @discardableResult
    public func put(id: String, key: [UInt8]) -> Bool {
        precondition(key.count == RelayCrypto.deviceKeyLength, "device key must be 16 bytes")
        return rl_core_device_put(core, id, key) == 0
    }

    /// ``put(id:key:)`` for a key that is borrowed, not copied (the bulk load at start).
    public func put(id: String, key: UnsafeRawBufferPointer) -> Bool {
        precondition(key.count == RelayCrypto.deviceKeyLength, "device key must be 16 bytes")
        return rl_core_device_put(core, id, key.baseAddress!.assumingMemoryBound(to: UInt8.self)) == 0
    }

    /// Removes a device; false when the core did not know it.
    @discardableResult
    public func remove(id: String) -> Bool {
        rl_core_device_remove(core, id) == 0
    }

    /// Refuses the token named `token` from now until it expires (401 "token revoked").
    @discardableResult
    public func revoke(_ token: RevokedToken) -> Bool {
        let id = token.idBytes
        guard id.count == Tokens.idLength else { return false }
        return rl_core_token_revoke(core, id, token.expiresUnix) == 0
    }

    /// Starts the loop thread.
    public func start() throws {
        _ = try callReturningStatus("start the relay core") { rl_core_start(core, $0, $1) }
    }

    /// /healthz answers 200 only while ready.
    public func setReady(_ ready: Bool) {
        rl_core_set_ready(core, ready ? 1 : 0)
    }

    /// Turns TLS on (before ``start()``) or replaces the certificates (after: a reload).
    public func setTLS(certs: [String], keys: [String], deviceCA: String?) throws {
        let c = certs.map(OwnedCString.init), k = keys.map(OwnedCString.init)
        let ca = deviceCA.map(OwnedCString.init)
        var certPointers = c.map { UnsafePointer<CChar>?(UnsafePointer($0.pointer)) }
        var keyPointers = k.map { UnsafePointer<CChar>?(UnsafePointer($0.pointer)) }
        _ = try callReturningStatus("load the TLS certificates") { err, len in
            rl_core_set_tls(core, &certPointers, &keyPointers, certs.count, ca.map { UnsafePointer($0.pointer) }, err, len)
        }
        withExtendedLifetime((c, k, ca)) {}
    }

    /// /readyz answers 503 while the device store cannot be read.
    public func setStoreUp(_ up: Bool) {
        rl_core_set_store_up(core, up ? 1 : 0)
    }

    public func setStoreReadable(_ readable: Bool) {
        rl_core_set_store_ok(core, readable ? 1 : 0)
    }

    /// Graceful stop, first half: no new terminals; sessions close as their responses end.
    /// Done when ``stats()`` shows no session and no terminal connection.
    public func drain() {
        rl_core_drain(core)
    }

    /// Applies the timer settings of `configuration` (validated) to the running core.
    public func reconfigure(_ configuration: RelayConfiguration) {
        var config = configuration.coreConfig(tokenKey: [UInt8](repeating: 0, count: RelayCrypto.tokenKeyLength), domain: nil)
        rl_core_reconfigure(core, &config)
    }

    /// Stops accepting, ends sessions and joins the loop thread. Idempotent.
    public func stop() {
        rl_core_stop(core)
    }

    public func stats() -> rl_stats {
        var stats = rl_stats()
        rl_core_stats(core, &stats)
        return stats
    }

    /// Up to `max` finished sessions the core has queued, oldest first.
    public func drainRecords(max: Int = 256) -> [SessionRecord] {
        var buffer = [rl_session_record](repeating: rl_session_record(), count: max)
        let count = buffer.withUnsafeMutableBufferPointer { rl_core_drain_records(core, $0.baseAddress, max) }
        return buffer.prefix(Swift.min(count, max)).map(SessionRecord.init)
    }

    /// Operator events the core noticed (an old agent, an anchor flapping between two
    /// sources, a device leaving or not answering its wake), oldest first.
    public func drainEvents(max: Int = 64) -> [CoreEvent] {
        var buffer = [rl_core_event](repeating: rl_core_event(), count: max)
        let count = buffer.withUnsafeMutableBufferPointer { rl_core_drain_events(core, $0.baseAddress, max) }
        return buffer.prefix(Swift.min(count, max)).map(CoreEvent.init)
    }
}

/// One rl_core_event, as the log shows it.
public struct CoreEvent: Sendable {
    public var name: String
    public var deviceID: String
    public var detail: String
    /// Notable but expected (a device leaving) logs at notice; the rest needs a look.
    public var isWarning: Bool

    init(_ e: rl_core_event) {
        var e = e
        deviceID = withUnsafeBytes(of: &e.device_id) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        detail = withUnsafeBytes(of: &e.detail) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch Int(e.kind) {
        case Int(RL_EVENT_OLD_VERSION): name = "device.old_protocol"; isWarning = true
        case Int(RL_EVENT_ANCHOR_FLAP): name = "device.anchor_flap"; isWarning = true
        case Int(RL_EVENT_DEVICE_LEFT): name = "device.left"; isWarning = false
        case Int(RL_EVENT_WAKE_UNANSWERED): name = "device.wake_unanswered"; isWarning = true
        case Int(RL_EVENT_PEER_SILENT): name = "mesh.peer_silent"; isWarning = true
        default: name = "device.event"; isWarning = true
        }
    }
}
