import Configuration
import Foundation
import SystemPackage
import Yams

/// The settings under the command-line flags: environment variables first, then a YAML
/// config file. A key is a long flag's name (`max-sessions`); its variable is the prefix
/// plus the key upper-cased with `_` for `-` (`RELAY_MAX_SESSIONS`), lists comma-separated.
///
/// swift-configuration does the lookups and the precedence; the file is also read once
/// with Yams to refuse what a lookup would silently skip: unknown keys (a typo) and
/// values of the wrong shape.
public struct ConfigLayers: Sendable {
    /// The keys a command accepts, and whether each takes a list.
    public struct Schema: Sendable {
        public let scalars: Set<String>
        public let lists: Set<String>

        public init(scalars: Set<String>, lists: Set<String> = []) {
            self.scalars = scalars
            self.lists = lists
        }
    }

    /// A value and the variable or file that set it.
    public struct Sourced<Value: Sendable>: Sendable {
        public let value: Value
        public let origin: String
    }

    public let filePath: String?
    private let environmentPrefix: String
    private let environment: ConfigReader
    private let file: ConfigReader?

    /// No file and no variables: every setting comes from the flags or the defaults.
    public static let none = ConfigLayers(filePath: nil, environmentPrefix: "", environment: [:], file: nil)

    private init(filePath: String?, environmentPrefix: String, environment: [String: String], file: ConfigReader?) {
        self.filePath = filePath
        self.environmentPrefix = environmentPrefix
        self.environment = ConfigReader(
            provider: EnvironmentVariablesProvider(environmentVariables: environment, arraySeparator: ","))
        self.file = file
    }

    /// Reads `file` (when given) and the variables that start with `environmentPrefix`.
    /// Errors name the file and the key; a missing file is an error (it was asked for).
    public static func load(
        file path: String?, schema: Schema, environmentPrefix: String,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) async throws(ConfigurationError) -> ConfigLayers {
        var scoped: [String: String] = [:]
        for (name, value) in environment where name.hasPrefix(environmentPrefix) {
            scoped[String(name.dropFirst(environmentPrefix.count))] = value
        }
        guard let path else {
            return ConfigLayers(filePath: nil, environmentPrefix: environmentPrefix, environment: scoped, file: nil)
        }
        guard let text = readTextFile(path) else {
            let why = FileManager.default.fileExists(atPath: path) ? "permission denied or not UTF-8 text" : "no such file"
            throw ConfigurationError(flag: "--config", "cannot read \(path): \(why)")
        }
        guard try check(text, path: path, schema: schema) else {
            // Empty, or comments only: the file sets nothing.
            return ConfigLayers(filePath: path, environmentPrefix: environmentPrefix, environment: scoped, file: nil)
        }
        let provider: FileProvider<YAMLSnapshot>
        do {
            provider = try await FileProvider<YAMLSnapshot>(filePath: FilePath(path))
        } catch {
            throw ConfigurationError(flag: "--config", "cannot load \(path): \(error)")
        }
        return ConfigLayers(
            filePath: path, environmentPrefix: environmentPrefix, environment: scoped,
            file: ConfigReader(provider: provider))
    }

    /// A scalar setting as text, from the environment or else the file.
    public func string(_ key: String) -> Sourced<String>? {
        if let value = environment.string(forKey: ConfigKey(key)) {
            return Sourced(value: value, origin: variableName(key))
        }
        if let file, let filePath, let value = file.string(forKey: ConfigKey(key)) {
            return Sourced(value: value, origin: filePath)
        }
        return nil
    }

    /// A list setting, from the environment (comma-separated) or else the file.
    public func list(_ key: String) -> Sourced<[String]>? {
        if let value = environment.stringArray(forKey: ConfigKey(key)) {
            return Sourced(value: value.map { $0.trimmingCharacters(in: .whitespaces) }, origin: variableName(key))
        }
        if let file, let filePath, let value = file.stringArray(forKey: ConfigKey(key)) {
            return Sourced(value: value, origin: filePath)
        }
        return nil
    }

    /// `RELAY_MAX_SESSIONS` for `max-sessions`.
    public func variableName(_ key: String) -> String {
        environmentPrefix + key.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    /// Unknown keys and wrongly shaped values, which lookups would pass over in silence.
    /// False when the file holds no value at all (empty, or comments only).
    static func check(_ text: String, path: String, schema: Schema) throws(ConfigurationError) -> Bool {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw ConfigurationError(flag: "--config", "\(path) is not valid YAML: \(oneLine(error))")
        }
        guard let node else { return false }
        guard let mapping = node.mapping else {
            throw ConfigurationError(flag: "--config", "\(path) must be a mapping of keys to values")
        }
        for (keyNode, value) in mapping {
            guard let key = keyNode.string else {
                throw ConfigurationError(flag: "--config", "\(path): every key must be a string")
            }
            let flag = "--\(key)"
            if schema.lists.contains(key) {
                guard let items = value.sequence, items.allSatisfy({ $0.scalar != nil }) else {
                    throw ConfigurationError(
                        flag: flag, "must be a list of strings, like [\"127.0.0.1:8080\"]", origin: path)
                }
            } else if schema.scalars.contains(key) {
                guard value.scalar != nil else {
                    throw ConfigurationError(flag: flag, "must be a single value, not a list or a mapping", origin: path)
                }
            } else {
                let known = (schema.scalars.union(schema.lists)).sorted().joined(separator: ", ")
                throw ConfigurationError(flag: flag, "unknown key (known keys: \(known))", origin: path)
            }
        }
        return true
    }

    /// Yams's message without the quoted file it appends, which may hold a secret: its
    /// first line and the position.
    private static func oneLine(_ error: any Error) -> String {
        let lines = "\(error)".split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let position = lines.last { $0.hasPrefix("in line ") }
        return ([lines.first].compactMap { $0 } + [position].compactMap { $0 }).joined(separator: " ")
    }
}

/// The whole file as UTF-8 text, or nil.
func readTextFile(_ path: String) -> String? {
    readFileBytes(path).flatMap { String(validating: $0, as: UTF8.self) }
}

/// The whole file's bytes, or nil. Plain stdio: Foundation's String(contentsOfFile:) and
/// FileManager.contents(atPath:) leak their buffer on an empty file (seen under
/// LeakSanitizer).
public func readFileBytes(_ path: String) -> [UInt8]? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16384)
    while true {
        let n = fread(&chunk, 1, chunk.count, file)
        if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
        if n < chunk.count { break }
    }
    return ferror(file) == 0 ? bytes : nil
}
