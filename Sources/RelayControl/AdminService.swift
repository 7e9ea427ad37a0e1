import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// Where the running relay's admin listener is, for the CLI on the same machine:
/// `<data>/admin.json`, mode 0600 (as private as the store next to it), written once the
/// listener is bound and removed at stop.
public struct AdminEndpoint: Codable, Sendable, Equatable {
    public static let fileName = "admin.json"
    /// "http://127.0.0.1:PORT" or "https://…"; a wildcard host is given as loopback.
    public var url: String
    /// The address as bound, with its port.
    public var address: String
    /// A key made at this start for local use (the store keeps its hash, as for every key).
    public var key: String
    public var pid: Int32
    public var tls: Bool

    public static func path(dataDirectory: String) -> String {
        (dataDirectory as NSString).appendingPathComponent(fileName)
    }

    /// The endpoint a relay on `dataDirectory` wrote, or nil.
    public static func read(dataDirectory: String) -> AdminEndpoint? {
        guard let data = FileManager.default.contents(atPath: path(dataDirectory: dataDirectory)) else { return nil }
        return try? JSONDecoder().decode(AdminEndpoint.self, from: data)
    }

    func write(dataDirectory: String) throws {
        let final = Self.path(dataDirectory: dataDirectory)
        let temp = final + ".tmp"
        let data = try JSONEncoder().encode(self)
        unlink(temp)
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CoreError(operation: "write \(temp)", message: String(cString: strerror(errno))) }
        let ok = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) == $0.count }
        close(fd)
        guard ok, rename(temp, final) == 0 else {
            unlink(temp)
            throw CoreError(operation: "write \(final)", message: String(cString: strerror(errno)))
        }
    }

    static func remove(dataDirectory: String) {
        unlink(path(dataDirectory: dataDirectory))
    }
}

/// The admin listener's bound address once it is up, awaited by ``RelayServer/run()`` so that
/// the relay says ready only with admin.json in place.
actor AdminBinding {
    private var result: Result<String, any Error>?
    private var waiters: [CheckedContinuation<String, any Error>] = []

    func set(_ r: Result<String, any Error>) {
        guard result == nil else { return }
        result = r
        for w in waiters { w.resume(with: r) }
        waiters = []
    }

    func wait() async throws -> String {
        if let result { return try result.get() }
        return try await withCheckedThrowingContinuation { waiters.append($0) }
    }

    var address: String? { try? result?.get() }
}

/// Runs the admin API (Hummingbird) on its own listener until the group shuts down.
struct AdminService: Service {
    let api: AdminAPI
    let address: ListenAddress
    let tls: (certs: [String], keys: [String])?
    let dataDirectory: String
    let store: DeviceStore
    let binding: AdminBinding
    let logger: Logger

    func run() async throws {
        do {
            try await serve()
        } catch {
            await binding.set(.failure(error))
            throw error
        }
    }

    /// The local key's name: one per host and data directory, since a cluster's relays share
    /// one store and each replaces only its own key at start.
    static func localKeyName(dataDirectory: String) -> String {
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        let directory = URL(fileURLWithPath: dataDirectory).standardizedFileURL.path
        return "local (admin.json, \(String(cString: host)):\(directory))"
    }

    private func serve() async throws {
        let localName = Self.localKeyName(dataDirectory: dataDirectory)
        let local = try store.createAdminKey(name: localName, local: true)
        let host = address.host.hasPrefix("[") ? String(address.host.dropFirst().dropLast()) : address.host
        var server: HTTPServerBuilder = .http1()
        if let tls, let cert = tls.certs.first, let key = tls.keys.first {
            let chain = try NIOSSLCertificate.fromPEMFile(cert).map { NIOSSLCertificateSource.certificate($0) }
            let privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
            let configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain, privateKey: .privateKey(privateKey))
            server = try .tls(.http1(), tlsConfiguration: configuration)
        }
        let scheme = tls == nil ? "http" : "https"
        let binding = self.binding
        let dataDirectory = self.dataDirectory
        let logger = self.logger
        let boundHost = address.host
        var appLogger = logger
        appLogger.logLevel = .warning  // one line per request would be too much; errors still show
        let app = Application(
            router: api.router(),
            server: server,
            configuration: .init(address: .hostname(host, port: Int(address.port)), serverName: nil),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? Int(address.port)
                let bound = "\(boundHost):\(port)"
                let urlHost: String
                switch boundHost {
                case "0.0.0.0", "*": urlHost = "127.0.0.1"
                case "[::]": urlHost = "[::1]"
                default: urlHost = boundHost
                }
                let endpoint = AdminEndpoint(
                    url: "\(scheme)://\(urlHost):\(port)", address: bound, key: local.key, pid: getpid(),
                    tls: scheme == "https")
                do {
                    try endpoint.write(dataDirectory: dataDirectory)
                    await binding.set(.success(bound))
                } catch {
                    logger.error("admin.endpoint.write_failed", metadata: ["error": "\(error)"])
                    await binding.set(.failure(error))
                }
            },
            logger: appLogger)
        defer {
            AdminEndpoint.remove(dataDirectory: dataDirectory)
            try? store.removeLocalAdminKeys(name: localName)
        }
        do {
            try await app.run()
        } catch {
            throw CoreError(operation: "--admin \(address)", message: "\(error)")
        }
    }
}
