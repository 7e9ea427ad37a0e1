import ArgumentParser
import RelayControl

/// `relay check-config`: what `relay serve` with the same options would run with.
struct CheckConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate the configuration and print the effective settings.",
        discussion: """
            Takes the options of `relay serve` and reads RELAY_* variables the same way. Prints \
            every setting as YAML, each with where its value came from, and exits 0; or prints \
            the first problem, naming the key, and exits 64. Nothing is bound or opened.
            """
    )

    @OptionGroup var options: ServeOptions

    @Flag(help: "Print the README's table of the serve options, made from the settings table, and exit.")
    var printSettingsTable = false

    func run() async throws {
        if printSettingsTable {
            print(RelayConfiguration.settingsMarkdown(), terminator: "")
            return
        }
        do {
            let configuration = try await options.resolve()
            print(configuration.effectiveYAML(), terminator: "")
        } catch {
            throw configurationFailure(error)
        }
    }
}
