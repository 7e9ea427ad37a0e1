import ArgumentParser
import RelayControl

/// `relay`: the NAT-traversal relay, its device store and its device agent.
@main
struct RelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "Reach web servers on devices behind NAT through a relay.",
        discussion: """
            Start a relay with `relay serve`, provision a device with `relay device add ID`, \
            run `relay agent` on the device, and give terminals a `relay token ID`.
            """,
        version: RelayVersion.description,
        subcommands: [
            ServeCommand.self, CheckConfigCommand.self, DeviceCommand.self, TokenCommand.self, AdminKeyCommand.self, ConsoleCommand.self,
            AgentCommand.self,
        ]
    )
}
