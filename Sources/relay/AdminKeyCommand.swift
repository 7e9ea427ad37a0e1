import ArgumentParser
import Foundation
import RelayControl

/// `relay admin-key create|list|revoke`: keys of the admin API (`Authorization: Bearer <key>`).
struct AdminKeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin-key",
        abstract: "Create, list or revoke admin API keys (the store keeps their SHA-256, never the key).",
        subcommands: [Create.self, List.self, Revoke.self]
    )

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an admin key and print it alone on one line (shown once). A running relay accepts it at once.")

        @Option(help: ArgumentHelp("A name to tell keys apart. (default: admin)", valueName: "name"))
        var name = "admin"

        @OptionGroup var data: DataOptions

        func run() throws {
            let store = try data.open()
            let (id, key) = try store.createAdminKey(name: name)
            FileHandle.standardError.write(Data("admin key \(id) (\(name)) created; it is not shown again\n".utf8))
            print(key)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One line per key, tab-separated: ID, name, created (ISO 8601), kind (key, or local: a running relay's admin.json key).")

        @OptionGroup var data: DataOptions

        func run() throws {
            let store = try data.open(createIfMissing: false)
            let formatter = ISO8601DateFormatter()
            for key in try store.adminKeys() {
                print([key.id, key.name, formatter.string(from: key.createdAt), key.local ? "local" : "key"].joined(separator: "\t"))
            }
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke an admin key by ID: a running relay refuses it from its next request on.")

        @Argument(help: "Key ID (from `relay admin-key list`).")
        var id: String

        @OptionGroup var data: DataOptions

        func run() throws {
            let store = try data.open(createIfMissing: false)
            guard try store.revokeAdminKey(id: id) else {
                FileHandle.standardError.write(Data("Error: no admin key \(id); see `relay admin-key list`\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}
