import Logging

/// Process-wide logging: one line per event on stderr (stdout stays for the values the
/// CLI prints, such as a secret or a token), at `level` and above.
public enum RelayLogging {
    public static func bootstrap(level: Logger.Level) {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
