import ArgumentParser
import Logging

// --log-level takes swift-log's level names: trace, debug, info, notice, warning, error, critical.
extension Logger.Level: @retroactive ExpressibleByArgument {}
