import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The relay's data directory and the files in it. The store holds the token signing key
/// and every device key, so only the owner may read it: the directory is made 0700 and the
/// database 0600 (SQLite gives its -wal and -shm files the database's mode).
enum DataDirectory {
    /// Makes `path` (and its parents) when missing; an existing directory is left as it is,
    /// since it may be shared (a directory the operator made, or even /tmp).
    static func prepare(_ path: String) throws(DeviceStoreError) {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw .dataDirectory(path, "it exists and is not a directory") }
            return
        }
        do {
            try FileManager.default.createDirectory(
                atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw .dataDirectory(path, "\(error.localizedDescription)")
        }
        // The umask may have taken bits away; make the mode exactly 0700.
        guard chmod(path, 0o700) == 0 else { throw .dataDirectory(path, String(cString: strerror(errno))) }
    }

    /// Creates `file` empty with mode 0600 when missing, so that SQLite never makes it with
    /// the umask's mode; tightens an existing file that group or others could read.
    static func prepareSecretFile(_ file: String) throws(DeviceStoreError) {
        let fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .database(file, String(cString: strerror(errno))) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .database(file, String(cString: strerror(errno))) }
        if info.st_mode & 0o077 != 0, fchmod(fd, 0o600) != 0 {
            throw .database(file, "cannot make it private (chmod 600): \(String(cString: strerror(errno)))")
        }
    }
}
