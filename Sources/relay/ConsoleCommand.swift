import ArgumentParser
import Foundation
import RelayControl

/// `relay console`: the running relay's console address with a login link.
struct ConsoleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console",
        abstract: "Print a link that opens the running relay's console logged in (the local key of <data>/admin.json, in the URL fragment, which never leaves the browser).")

    @OptionGroup var data: DataOptions

    func run() throws {
        guard let endpoint = AdminEndpoint.read(dataDirectory: data.resolved) else {
            FileHandle.standardError.write(
                Data("Error: no running relay on \(data.resolved) (no admin.json); start `relay serve` with its admin listener on\n".utf8))
            throw ExitCode(1)
        }
        print("\(endpoint.url)/#key=\(endpoint.key)")
    }
}
