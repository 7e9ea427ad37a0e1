import ArgumentParser
import RelayControl

/// `--data`, shared by every command that opens the device store.
struct DataOptions: ParsableArguments {
    @Option(
        name: .customLong("data"),
        help: settingHelp(\.dataDirectory))
    var directory: String?

    /// The directory to use: the flag, else $RELAY_DATA, else ./relay-data.
    var resolved: String { directory ?? RelayConfiguration.defaultDataDirectory() }
}
