import ArgumentParser
import Foundation
import RelayControl

/// `relay device add|list|remove`: provisioning in the store a running relay syncs from.
struct DeviceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "device",
        abstract: "Add, list or remove devices (a running relay picks changes up within a second).",
        subcommands: [Add.self, List.self, Remove.self]
    )

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Provision a device and print its secret (shown once; give it to `relay agent --key`).")

        @Argument(help: "Device ID: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'.")
        var id: String

        @OptionGroup var data: DataOptions

        func run() throws {
            let store = try DeviceStore(directory: data.resolved)
            let secret = try store.add(id: id)
            print(Hex.encode(secret))
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print one line per device: ID, a tab, and when it was added (ISO 8601).")

        @OptionGroup var data: DataOptions

        func run() throws {
            let store = try DeviceStore(directory: data.resolved, createIfMissing: false)
            let formatter = ISO8601DateFormatter()
            for device in try store.list() {
                print("\(device.id)\t\(formatter.string(from: device.createdAt))")
            }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Deprovision a device; its tokens and secret stop working.")

        @Argument(help: "Device ID.")
        var id: String

        @OptionGroup var data: DataOptions

        func run() throws {
            let store = try DeviceStore(directory: data.resolved, createIfMissing: false)
            try store.remove(id: id)
        }
    }
}
