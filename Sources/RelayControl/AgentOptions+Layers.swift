import Foundation
import Logging

/// `relay agent`'s config file keys and `RELAY_AGENT_*` variables: its long flags' names.
extension AgentOptions {
    public static let schema = ConfigLayers.Schema(scalars: ["relay", "id", "key", "key-file", "forward", "log-level"])
    public static let environmentPrefix = "RELAY_AGENT_"

    /// The secret from `key`, or else from the file `key-file` names (first line; a file
    /// that others can read is refused, as ssh refuses such a key).
    public static func secret(key: String?, keyFile: String?) throws(ConfigurationError) -> String {
        if let key { return key }
        guard let keyFile else {
            throw ConfigurationError(flag: "--key", "the device secret is needed: give --key or --key-file")
        }
        let attributes: [FileAttributeKey: Any]
        let text: String
        do {
            attributes = try FileManager.default.attributesOfItem(atPath: keyFile)
            text = try String(contentsOfFile: keyFile, encoding: .utf8)
        } catch {
            throw ConfigurationError(flag: "--key-file", "cannot read \(keyFile)")
        }
        if let mode = attributes[.posixPermissions] as? Int, mode & 0o077 != 0 {
            throw ConfigurationError(
                flag: "--key-file",
                "\(keyFile) can be read by others (mode \(String(mode, radix: 8))); chmod 600 it")
        }
        return String(text.split(whereSeparator: \.isNewline).first ?? "")
    }
}
