import ArgumentParser
import Foundation
import RelayControl

/// `relay token ID | list | revoke`: terminal access tokens, minted, listed and revoked.
struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Mint, list or revoke terminal access tokens (`relay token ID` mints one).",
        usage: """
            relay token <id> [--ttl <duration>] [--data <dir>]
            relay token list [<id>] [--all] [--data <dir>]
            relay token revoke (<tid> ... | --device <id>) [--data <dir>]
            """,
        discussion: """
            Send a token as `Authorization: Bearer <token>`, or once as ?relay_token=<token> in a \
            browser at http://ID.<domain>/ (path routing, /d/ID/, takes Authorization only). A running relay refuses a revoked token within a second, on open connections \
            too. Re-adding the device (new secret) invalidates all its old tokens.
            """,
        subcommands: [Mint.self, List.self, Revoke.self],
        // `relay token ID` keeps working; a device named like a subcommand needs `relay token mint ID`.
        defaultSubcommand: Mint.self
    )

    struct Mint: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a terminal access token for a device, alone on one line.")

        @Argument(help: "Device ID.")
        var id: String

        @Option(
            help: ArgumentHelp("How long the token is valid, e.g. 30m, 24h, 7d. (default: 24h)", valueName: "duration"),
            transform: parseDuration)
        var ttl: Duration = .seconds(86_400)

        @OptionGroup var data: DataOptions

        func validate() throws {
            if ttl < .seconds(1) { throw ValidationError("--ttl must be at least 1 second") }
        }

        func run() throws {
            let store = try data.open(createIfMissing: false)
            let token = try store.mintToken(id: id, ttl: ttl)
            print(token)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print one line per token, newest first, tab-separated: ID, device, created, expires (ISO 8601) and state (valid, expired or revoked).")

        @Argument(help: "Only this device's tokens.")
        var id: String?

        @Flag(help: "Include expired tokens.")
        var all = false

        @OptionGroup var data: DataOptions

        func run() throws {
            let store = try data.open(createIfMissing: false)
            let now = Date()
            let formatter = ISO8601DateFormatter()
            for token in try store.tokens(device: id, includeExpired: all, now: now) {
                let fields = [
                    token.id, token.device, formatter.string(from: token.createdAt),
                    formatter.string(from: token.expiresAt), token.state(at: now).rawValue,
                ]
                print(fields.joined(separator: "\t"))
            }
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke tokens by ID, or all of a device's; print the IDs revoked, one per line.",
            discussion: """
                An ID is the 16 hex digits `relay token list` shows; a whole token names its own ID. \
                Any unknown ID revokes nothing. A token revoked before is left as it was.
                """)

        @Argument(help: ArgumentHelp("Token IDs.", valueName: "tid"))
        var ids: [String] = []

        @Option(help: ArgumentHelp("Revoke every unexpired token of this device.", valueName: "id"))
        var device: String?

        @OptionGroup var data: DataOptions

        func validate() throws {
            if ids.isEmpty && device == nil { throw ValidationError("give token IDs or --device ID") }
            if !ids.isEmpty && device != nil { throw ValidationError("give token IDs or --device ID, not both") }
        }

        func run() throws {
            let store = try data.open(createIfMissing: false)
            let revoked = try device.map { try store.revokeTokens(device: $0) } ?? store.revokeTokens(ids)
            for id in revoked { print(id) }
            if !revoked.isEmpty { LiveRelay.syncNow(data.resolved) }
        }
    }
}
