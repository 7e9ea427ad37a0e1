import Foundation
import Logging

/// Everything `relay serve` can be told, with the defaults it runs with when told nothing.
///
/// One value is built by the CLI from the defaults, the config file, `RELAY_*` variables and
/// the flags (each over the one before), or directly by tests (which bind port 0), and
/// handed to ``RelayServer``. The initial values below are the defaults; each setting's key,
/// help, range and reload come from its row in ``settingsTable`` (Settings.swift).
public struct RelayConfiguration: Sendable {
    /// Where the device store lives (`relay.sqlite`). Default "./relay-data", or $RELAY_DATA.
    public var dataDirectory: String
    /// The device store: "sqlite" (`<data>/relay.sqlite`) or a `postgres://` URL.
    public var store: String = DeviceStore.embedded

    /// Terminal HTTP listeners. Default loopback only: 127.0.0.1:8080 and [::1]:8080.
    public var http: [String] = RelayConfiguration.defaultHTTP
    /// Device UDP listeners (notifies, wakes). Default 127.0.0.1:4700 and [::1]:4700.
    public var udp: [String] = RelayConfiguration.defaultUDP
    /// Device TCP callback listeners. Default 127.0.0.1:4701 and [::1]:4701.
    public var tcp: [String] = RelayConfiguration.defaultTCP
    /// Floating addresses (VRRP, moved by keepalived) this node may not hold at the moment:
    /// listeners on them are bound with IP_FREEBIND. None by default.
    public var floating: [String] = []
    /// The cluster (docs/ARCHITECTURE.md, "Cluster"): this node's number (0: none), where it
    /// takes WAKEs, where it sends them, the shared key's file and its own callback address.
    public var node: Int = 0
    public var mesh: [String] = []
    public var meshPeers: [String] = []
    public var meshKeyFile: String? = nil
    public var callbackHost: String? = nil
    /// Whether this node wakes devices through other nodes.
    public var isClustered: Bool { !meshPeers.isEmpty }
    /// Prometheus /metrics listeners. None by default: metrics are opt-in.
    public var metrics: [String] = RelayConfiguration.defaultMetrics
    /// The admin API and console (HTTP + JSON, Bearer admin key). Default loopback with a
    /// port picked at start ("127.0.0.1:0"), written to `<data>/admin.json` for the CLI; nil
    /// (`off`) turns it off. TLS with the relay's certificate when it has one.
    public var admin: String? = RelayConfiguration.defaultAdmin
    /// Terminal HTTPS listeners; by default 127.0.0.1:8443 and [::1]:8443 once a
    /// certificate is configured, none without.
    public var https: [String]? = nil

    /// TLS certificate chains and their private keys (PEM), pairwise; the first is the
    /// default (no SNI match) and the device leg's. None: plain TCP on both legs.
    public var tlsCerts: [String] = []
    public var tlsKeys: [String] = []
    /// CA whose certificates devices must present, naming their ID. None: not asked.
    public var deviceCA: String? = nil

    /// Host routing serves device ID at `<id>.<domain>`; "" turns host routing off.
    public var domain: String = "localhost"
    /// Max access period: a device with no NOTIFY_A for this long is offline (503).
    public var period: Duration = .seconds(300)
    /// NOTIFY_B interval told to agents; must stay below every NAT's UDP mapping timeout
    /// and below ``period``. When only the period is given, use ``defaultKeepalive(period:)``.
    public var keepalive: Duration = .seconds(25)
    /// Loop threads (libevent event bases) the core runs; fixed at start. Default: the online
    /// CPUs, at most ``maxDefaultThreads``.
    public var threads: Int = RelayConfiguration.defaultThreads
    /// Registry size in devices, reserved at start.
    public var capacity: Int = 1_000_000
    /// Concurrent terminal sessions (waking, bound or idle).
    public var maxSessions: Int = 65536
    /// A device that has not called back within this gets the terminal a 504.
    public var wakeTimeout: Duration = .seconds(5)
    /// An idle device link is kept this long for reuse by X-Relay-Session.
    public var idleLink: Duration = .seconds(60)
    /// Largest terminal request head accepted (431 above).
    public var maxHeaderBytes: Int = 16384
    /// A terminal must send its request head within this (408 after).
    public var headerTimeout: Duration = .seconds(10)
    /// Abuse limits (0 turns one off): open terminal connections and new ones per second
    /// from one address, sessions and wakes per minute of one device, and how long a bound
    /// terminal may stay silent both ways.
    public var maxConnsPerSource: Int = 1024
    public var connRatePerSource: Int = 200
    /// Device callbacks from one address whose hello has not verified yet (a carrier NAT
    /// puts many devices behind one address, but each callback's hello comes at once).
    public var maxCallbacksPerSource: Int = 64
    public var maxSessionsPerDevice: Int = 64
    public var wakesPerDeviceMinute: Int = 600
    public var idleTimeout: Duration = .seconds(300)
    /// SIGTERM lets in-flight sessions finish for this long, then ends the rest.
    public var drainTimeout: Duration = .seconds(30)
    /// Log threshold for stderr.
    public var logLevel: Logger.Level = .info

    /// Keys set by an environment variable or the config file, with the one that set each
    /// (for error messages and `relay check-config`). Keys set by a flag are not here.
    public var origins: [String: String] = [:]

    public static let defaultHTTP = ["127.0.0.1:8080", "[::1]:8080"]
    public static let defaultUDP = ["127.0.0.1:4700", "[::1]:4700"]
    public static let defaultTCP = ["127.0.0.1:4701", "[::1]:4701"]
    public static let defaultMetrics: [String] = []
    public static let defaultAdmin: String? = "127.0.0.1:0"
    public static let defaultHTTPS = ["127.0.0.1:8443", "[::1]:8443"]

    /// The default of ``threads`` never exceeds this, however many CPUs the machine has.
    public static let maxDefaultThreads = 16

    /// The online CPUs (`sysconf(_SC_NPROCESSORS_ONLN)`), from 1 to ``maxDefaultThreads``.
    public static var defaultThreads: Int { defaultThreads(onlineCPUs: sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// ``defaultThreads`` for a machine with `onlineCPUs` (a failed sysconf's -1 counts as 1).
    public static func defaultThreads(onlineCPUs: Int) -> Int { min(maxDefaultThreads, max(1, onlineCPUs)) }

    /// The HTTPS listeners in force: given ones, else the defaults when TLS is on.
    public var effectiveHTTPS: [String] { https ?? (tlsCerts.isEmpty ? [] : Self.defaultHTTPS) }

    /// The defaults, with the data directory taken from `RELAY_DATA` when it is set.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        dataDirectory = Self.defaultDataDirectory(environment: environment)
    }

    /// "./relay-data" unless `RELAY_DATA` names another directory. Shared by every command
    /// that takes --data, so that serve and the device commands agree on the store.
    public static func defaultDataDirectory(
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> String {
        if let fromEnvironment = environment["RELAY_DATA"], !fromEnvironment.isEmpty { return fromEnvironment }
        return "./relay-data"
    }

    /// The keepalive that goes with `period` when none is given: 25 s, or half the period
    /// (at least 1 s) when that is shorter, so that `--period 2` alone is a working setup.
    public static func defaultKeepalive(period: Duration) -> Duration {
        let half = Duration.seconds(max(1, period.wholeSeconds / 2))
        return min(.seconds(25), half)
    }

    /// The configured addresses of one listener kind.
    public func addresses(_ kind: ListenerKind) -> [String] {
        switch kind {
        case .http: return http
        case .https: return effectiveHTTPS
        case .udp: return udp
        case .tcp: return tcp
        case .metrics: return metrics
        }
    }

    /// Whether `kind` still has its built-in list. A default IPv6 address that cannot be
    /// bound (a host without IPv6) is then skipped with a warning instead of failing.
    public func usesDefaultAddresses(_ kind: ListenerKind) -> Bool {
        switch kind {
        case .http: return http == Self.defaultHTTP
        case .https: return https == nil
        case .udp: return udp == Self.defaultUDP
        case .tcp: return tcp == Self.defaultTCP
        case .metrics: return metrics == Self.defaultMetrics
        }
    }
}
