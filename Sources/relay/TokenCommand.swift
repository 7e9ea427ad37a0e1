import ArgumentParser
import Foundation
import RelayControl

/// `relay token ID`: a terminal access token for one device.
struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Print a terminal access token for a device.",
        discussion: """
            Send it as `Authorization: Bearer <token>`, or once as ?relay_token=<token> in a browser. \
            Re-adding the device (new secret) invalidates its old tokens.
            """
    )

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
        let store = try DeviceStore(directory: data.resolved, createIfMissing: false)
        let token = try store.mintToken(id: id, ttl: ttl)
        print(token)
    }
}
