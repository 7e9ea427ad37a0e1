import CRelayCore

/// Live state of one device as the core sees it (``RelayCore/inspect(ids:)``).
public struct DeviceLiveView: Sendable, Equatable {
    public let id: String
    public let known: Bool
    public let online: Bool
    /// Seconds since its last notify A, nil when none came since the relay started.
    public let lastNotifyAAgeSeconds: Int64?
    /// The public address the relay sees ("ip:port"), nil when the device never notified.
    public let address: String?
    /// Address changes while it was in the side table (see docs/ARCHITECTURE.md).
    public let addressChanges: UInt32
    public let sessions: UInt32
    public let lastWake: WakeRecord?
    /// Why the relay would answer 503 now (the front's own verdict), nil when online.
    public let offlineReason: String?
}

public struct WakeRecord: Sendable, Equatable {
    public let atUnix: UInt64
    /// "bound" (the device called back) or "timeout".
    public let outcome: String
    public let latencyMicroseconds: UInt32

    init(atUnix: UInt64, outcome: UInt32, latency: UInt32) {
        self.atUnix = atUnix
        self.outcome = Int(outcome) == Int(RL_WAKE_BOUND) ? "bound" : Int(outcome) == Int(RL_WAKE_TIMEOUT) ? "timeout" : "unknown"
        self.latencyMicroseconds = latency
    }
}

public struct DeviceHistory: Sendable, Equatable {
    public let tracked: Bool
    public let addressChanges: UInt32
    /// Newest first: (when, the new address).
    public let addresses: [(atUnix: UInt64, address: String)]
    public let wakes: [WakeRecord]

    public static func == (a: DeviceHistory, b: DeviceHistory) -> Bool {
        a.tracked == b.tracked && a.addressChanges == b.addressChanges && a.wakes == b.wakes
            && a.addresses.map(\.address) == b.addresses.map(\.address)
    }
}

public struct LiveSession: Sendable, Equatable {
    public let id: String
    public let device: String
    public let state: String
    public let ageMilliseconds: UInt64
    public let terminal: String?
    public let bytesToDevice: UInt64
    public let bytesToTerminal: UInt64
}

public struct FleetSummary: Sendable, Equatable {
    public let devices: UInt64
    public let online: UInt64
    public let neverNotified: UInt64
    public let capacity: UInt64
    public let sessions: UInt64
    public let tracked: UInt64
    public let periodSeconds: UInt32
    /// Device page requests answered, and how long they held the loop thread (microseconds).
    public let pageRequests: UInt64
    public let pageLoopMicrosecondsTotal: UInt64
    public let pageLoopMicrosecondsMax: UInt64
    /// How long this summary's pass over the registry took on the loop thread.
    public let summaryLoopMicroseconds: UInt64
    /// Loop callbacks that pass took (65536 entries each).
    public let summaryChunks: UInt64
}

/// The core did not answer an inspection in time (it is stopping).
public struct CoreUnavailable: Error, CustomStringConvertible {
    public var description: String { "the relay core did not answer (stopping?)" }
}

extension RelayCore {
    /// How long a control-layer thread waits for the loop thread.
    static let inspectTimeoutMs: UInt32 = 2000
    public static let inspectMax = Int(RL_INSPECT_MAX)

    /// One request to the loop thread for up to ``inspectMax`` devices.
    public func inspect(ids: [String]) throws -> [DeviceLiveView] {
        var result: [DeviceLiveView] = []
        result.reserveCapacity(ids.count)
        var start = 0
        while start < ids.count {
            let chunk = ids[start..<min(ids.count, start + Self.inspectMax)]
            var views = [rl_device_view](repeating: rl_device_view(), count: chunk.count)
            for (i, id) in chunk.enumerated() {
                withUnsafeMutableBytes(of: &views[i].id) { raw in
                    let bytes = Array(id.utf8.prefix(Int(RL_ID_MAX)))
                    raw.copyBytes(from: bytes)
                }
            }
            let rc = views.withUnsafeMutableBufferPointer {
                rl_core_inspect_devices(pointer, $0.baseAddress, $0.count, Self.inspectTimeoutMs)
            }
            guard rc == 0 else { throw CoreUnavailable() }
            for (i, v) in views.enumerated() {
                let address = String(cTuple: v.address)
                result.append(
                    DeviceLiveView(
                        id: chunk[chunk.startIndex + i], known: v.known != 0, online: v.online != 0,
                        lastNotifyAAgeSeconds: v.last_notify_a_age_s < 0 ? nil : v.last_notify_a_age_s,
                        address: address.isEmpty ? nil : address, addressChanges: v.address_changes,
                        sessions: v.sessions,
                        lastWake: v.last_wake_unix == 0
                            ? nil
                            : WakeRecord(
                                atUnix: v.last_wake_unix, outcome: v.last_wake_outcome, latency: v.last_wake_latency_us),
                        offlineReason: Self.offlineReason(v.offline_why, age: v.last_notify_a_age_s)))
            }
            start += chunk.count
        }
        return result
    }

    /// An admin request refused for its key (relay_admin_unauthorized_total).
    public func adminRefused() {
        rl_core_admin_refused(pointer)
    }

    /// Returns once the loop thread applied every device change queued before the call.
    public func barrier() throws {
        guard rl_core_inspect_devices(pointer, nil, 0, Self.inspectTimeoutMs) == 0 else { throw CoreUnavailable() }
    }

    /// The words of the front's 503 for each RL_OFFLINE_* code (liveness.c).
    static func offlineReason(_ why: UInt32, age: Int64) -> String? {
        switch Int(why) {
        case Int(RL_OFFLINE_NEVER): return "it has not notified the relay since the relay started"
        case Int(RL_OFFLINE_LEFT): return "its agent said it was stopping"
        case Int(RL_OFFLINE_UNANSWERED):
            return "it did not answer its last wake; it counts as offline until it notifies again"
        case Int(RL_OFFLINE_STALE): return "last notify \(age) s ago, longer than the max access period"
        default: return nil
        }
    }

    /// nil when the core does not know `id`.
    public func history(id: String) throws -> DeviceHistory? {
        var h = rl_device_history()
        let rc = rl_core_inspect_history(pointer, id, &h, Self.inspectTimeoutMs)
        if rc == -1 { return nil }
        guard rc == 0 else { throw CoreUnavailable() }
        var addresses: [(UInt64, String)] = []
        let addrTuple = h.addresses
        let addrArray = [addrTuple.0, addrTuple.1, addrTuple.2, addrTuple.3]
        for a in addrArray.prefix(Int(h.n_addresses)) {
            addresses.append((a.at_unix, String(cTuple: a.address)))
        }
        let wakeTuple = h.wakes
        let wakes = [wakeTuple.0, wakeTuple.1, wakeTuple.2, wakeTuple.3].prefix(Int(h.n_wakes)).map {
            WakeRecord(atUnix: $0.at_unix, outcome: $0.outcome, latency: $0.latency_us)
        }
        return DeviceHistory(
            tracked: h.tracked != 0, addressChanges: h.address_changes,
            addresses: addresses.map { (atUnix: $0.0, address: $0.1) }, wakes: wakes)
    }

    /// The sessions (of `device`, or all), at most `max`, and how many there are.
    public func sessions(device: String? = nil, max: Int = 1000) throws -> (sessions: [LiveSession], total: Int) {
        var buffer = [rl_session_view](repeating: rl_session_view(), count: Swift.max(1, max))
        var total = 0
        let n = buffer.withUnsafeMutableBufferPointer { b in
            rl_core_inspect_sessions(pointer, device, b.baseAddress, max, &total, Self.inspectTimeoutMs)
        }
        guard n >= 0 else { throw CoreUnavailable() }
        let states = ["waking", "bound", "idle"]
        let list = buffer.prefix(Int(n)).map { v -> LiveSession in
            let terminal = String(cTuple: v.terminal)
            return LiveSession(
                id: String(cTuple: v.session_id), device: String(cTuple: v.device_id),
                state: Int(v.state) < states.count ? states[Int(v.state)] : "unknown", ageMilliseconds: v.age_ms,
                terminal: terminal.isEmpty ? nil : terminal, bytesToDevice: v.bytes_to_device,
                bytesToTerminal: v.bytes_to_terminal)
        }
        return (list, total)
    }

    /// Ends session `id`; false when there is none.
    public func endSession(id: String) throws -> Bool {
        let rc = rl_core_end_session(pointer, id, Self.inspectTimeoutMs)
        if rc == -2 { throw CoreUnavailable() }
        return rc == 0
    }

    public func summary() throws -> FleetSummary {
        var s = rl_fleet_summary()
        guard rl_core_inspect_summary(pointer, &s, Self.inspectTimeoutMs) == 0 else { throw CoreUnavailable() }
        return FleetSummary(
            devices: s.devices, online: s.online, neverNotified: s.never_notified, capacity: s.capacity,
            sessions: s.sessions, tracked: s.tracked, periodSeconds: s.period_s, pageRequests: s.page_requests,
            pageLoopMicrosecondsTotal: s.page_loop_us_total, pageLoopMicrosecondsMax: s.page_loop_us_max,
            summaryLoopMicroseconds: s.summary_loop_us, summaryChunks: s.summary_chunks)
    }
}
