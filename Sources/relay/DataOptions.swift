import ArgumentParser
import Foundation
import RelayControl

/// `--data` and `--store`, shared by every command that opens the device store.
struct DataOptions: ParsableArguments {
    @Option(
        name: .customLong("data"),
        help: settingHelp(\.dataDirectory))
    var directory: String?

    @Option(help: settingHelp(\.store))
    var store: String?

    /// The directory to use: the flag, else $RELAY_DATA, else ./relay-data.
    var resolved: String { directory ?? RelayConfiguration.defaultDataDirectory() }

    /// The store to open: the flag, else $RELAY_STORE, else the SQLite file in the directory.
    var resolvedStore: String {
        if let store { return store }
        if let fromEnvironment = ProcessInfo.processInfo.environment["RELAY_STORE"], !fromEnvironment.isEmpty {
            return fromEnvironment
        }
        return DeviceStore.embedded
    }

    /// Opens the store these options name.
    func open(createIfMissing: Bool = true) throws -> DeviceStore {
        try DeviceStore(directory: resolved, store: resolvedStore, createIfMissing: createIfMissing)
    }
}
