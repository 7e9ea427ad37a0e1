import Foundation
import Logging

/// `relay agent`'s config file keys and `RELAY_AGENT_*` variables: its long flags' names.
extension AgentOptions {
    public static let schema = ConfigLayers.Schema(scalars: [
        "relay", "id", "key", "key-file", "forward", "log-level", "ca", "tls-name", "tls-cert", "tls-key",
    ])
    public static let environmentPrefix = "RELAY_AGENT_"

    /// The secret from `key`, or else from the file `key-file` names (first line; a file
    /// that others can read is refused, as ssh refuses such a key). `origin` says where
    /// `keyFile` was set, for the message.
    public static func secret(key: String?, keyFile: String?, origin: String? = nil) throws(ConfigurationError) -> String {
        if let key { return key }
        guard let keyFile else {
            throw ConfigurationError(flag: "--key", "the device secret is needed: give --key or --key-file")
        }
        return try readKeyFile(keyFile, origin: origin)
    }

    /// Refuses a file that others can read: it holds a secret.
    public static func requirePrivate(_ path: String, flag: String, origin: String?) throws(ConfigurationError) {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
            let mode = attributes[.posixPermissions] as? Int
        else {
            throw ConfigurationError(flag: flag, "cannot read \(path)", origin: origin)
        }
        if mode & 0o077 != 0 {
            throw ConfigurationError(
                flag: flag, "\(path) can be read by others (mode \(String(mode, radix: 8))) and holds the secret; chmod 600 it",
                origin: origin)
        }
    }

    private static func readKeyFile(_ keyFile: String, origin: String?) throws(ConfigurationError) -> String {
        try requirePrivate(keyFile, flag: "--key-file", origin: origin)
        guard let text = readTextFile(keyFile) else {
            throw ConfigurationError(flag: "--key-file", "cannot read \(keyFile)", origin: origin)
        }
        return String(text.split(whereSeparator: \.isNewline).first ?? "")
    }
}
