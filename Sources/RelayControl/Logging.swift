import Logging
import Synchronization

/// Process-wide logging: one line per event on stderr (stdout stays for the values the
/// CLI prints, such as a secret or a token), at the process level and above.
///
/// The level can change while the relay runs (SIGHUP after editing `log-level`): every
/// handler reads the shared level on each call unless a logger set its own.
public enum RelayLogging {
    private static let level = Atomic<UInt8>(levelCode(.info))

    public static func bootstrap(level: Logger.Level) {
        setLevel(level)
        LoggingSystem.bootstrap { label in
            ProcessLevelLogHandler(inner: StreamLogHandler.standardError(label: label))
        }
    }

    /// The level every logger without one of its own follows from now on.
    public static func setLevel(_ newLevel: Logger.Level) {
        level.store(levelCode(newLevel), ordering: .relaxed)
    }

    public static var currentLevel: Logger.Level {
        Logger.Level.allCases[Int(level.load(ordering: .relaxed))]
    }

    private static func levelCode(_ level: Logger.Level) -> UInt8 {
        UInt8(Logger.Level.allCases.firstIndex(of: level)!)
    }
}

/// swift-log's stream handler with a level that follows ``RelayLogging/currentLevel``
/// until a logger copy sets one (as the relay.ready line does, to print at any level).
struct ProcessLevelLogHandler: LogHandler {
    var inner: StreamLogHandler
    private var ownLevel: Logger.Level?

    init(inner: StreamLogHandler) {
        self.inner = inner
    }

    var logLevel: Logger.Level {
        get { ownLevel ?? RelayLogging.currentLevel }
        set { ownLevel = newValue }
    }

    var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }

    var metadataProvider: Logger.MetadataProvider? {
        get { inner.metadataProvider }
        set { inner.metadataProvider = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        // The inner handler filters nothing itself: Logger checked `logLevel` already.
        inner.log(event: event)
    }
}
