/// What can go wrong with the device store, each with the next step for the operator.
public enum DeviceStoreError: Error, CustomStringConvertible, Equatable {
    case invalidDeviceID(String)
    case deviceExists(String)
    case noSuchDevice(String)
    case storeMissing(String)
    case dataDirectory(String, String)
    case database(String, String)
    case corrupt(String, String)
    case invalidTokenID(String)
    case noSuchToken(String)
    case unknownStore(String)

    public var description: String {
        switch self {
        case .invalidDeviceID(let id):
            return "'\(id)' is not a valid device ID; use 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        case .deviceExists(let id):
            return "device '\(id)' already exists; remove it first or pick another ID"
        case .noSuchDevice(let id):
            return "no device '\(id)' in this store; list devices with `relay device list` or add it with `relay device add \(id)`"
        case .storeMissing(let path):
            return "no relay store at \(path); pass the --data directory the relay uses (or set RELAY_DATA), or add a device first"
        case .dataDirectory(let path, let reason):
            return "cannot use data directory \(path): \(reason)"
        case .database(let path, let reason):
            return "device store \(path) failed: \(reason)"
        case .invalidTokenID(let text):
            return "'\(text)' is not a token ID; give the 16 hex digits `relay token list` shows (or the whole token)"
        case .noSuchToken(let id):
            return "no token \(id) in this store; see `relay token list --all` (to invalidate tokens the store never recorded, re-add their device)"
        case .unknownStore(let text):
            // Only the scheme: whatever follows may hold a password.
            let scheme = text.range(of: "://").map { String(text[..<$0.lowerBound]) + "://..." } ?? text
            return "'\(scheme)' is not a store; use sqlite (the file in --data) or a postgres://user@host/db URL"
        case .corrupt(let path, let reason):
            return "device store \(path) is damaged (\(reason)); restore it from a backup or move it away to start fresh"
        }
    }
}
