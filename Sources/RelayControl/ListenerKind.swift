import CRelayCore

/// The kinds of sockets the core listens on, each named after its CLI flag.
public enum ListenerKind: CaseIterable, Sendable {
    /// Terminal HTTP front (with TLS configured: redirects to HTTPS).
    case http
    /// Terminal HTTPS front.
    case https
    /// Device datagrams: period discovery, notifies, wakes.
    case udp
    /// Device callbacks that become session links.
    case tcp
    /// Prometheus text at GET /metrics.
    case metrics

    public var flag: String {
        switch self {
        case .http: return "--http"
        case .https: return "--https"
        case .udp: return "--udp"
        case .tcp: return "--tcp"
        case .metrics: return "--metrics"
        }
    }

    /// The name used in the relay.ready line.
    public var name: String {
        switch self {
        case .http: return "http"
        case .https: return "https"
        case .udp: return "udp"
        case .tcp: return "tcp"
        case .metrics: return "metrics"
        }
    }

    var cKind: Int32 {
        switch self {
        case .http: return Int32(RL_LISTEN_HTTP)
        case .https: return Int32(RL_LISTEN_HTTPS)
        case .udp: return Int32(RL_LISTEN_UDP)
        case .tcp: return Int32(RL_LISTEN_TCP)
        case .metrics: return Int32(RL_LISTEN_METRICS)
        }
    }
}
