import CRelayCore
import Foundation

/// The cluster's settings (docs/ARCHITECTURE.md, "Cluster"): checked together, the key read
/// from its file, and handed to the core before it starts.
extension RelayConfiguration {
    /// What a node needs once it has peers, and nothing of it without: a half-set cluster is
    /// refused rather than run as a node of its own that nobody can wake through.
    func validateCluster() throws(ConfigurationError) {
        guard isClustered else {
            if node != 0 || !mesh.isEmpty || meshKeyFile != nil || callbackHost != nil {
                throw ConfigurationError(
                    flag: "--mesh-peer",
                    "cluster settings (--node, --mesh, --mesh-key-file, --callback-host) need the other nodes' mesh "
                        + "addresses")
            }
            return
        }
        if node == 0 { throw ConfigurationError(flag: "--node", "a cluster node needs its number, 1 to 255") }
        if mesh.isEmpty {
            throw ConfigurationError(flag: "--mesh", "a cluster node needs an address to take other nodes' WAKEs on")
        }
        for (flag, list) in [("--mesh", mesh), ("--mesh-peer", meshPeers)] {
            for text in list {
                guard let address = ListenAddress(text), address.port != 0,
                    let bytes = Self.ipBytes(address.host)
                else {
                    throw ConfigurationError(flag: flag, "'\(text)' is not IP:PORT or [IPV6]:PORT (numeric, with a port)")
                }
                if !Self.isPrivate(bytes) {
                    throw ConfigurationError(
                        flag: flag,
                        "'\(text)' is not a specific private address (10/8, 172.16/12, 192.168/16, 100.64/10, 127/8, "
                            + "fc00::/7, ::1): the mesh belongs on the nodes' private network")
                }
            }
        }
        if mesh.count > Int(RL_MESH_MAX_LISTEN_PUBLIC) {
            throw ConfigurationError(flag: "--mesh", "at most \(RL_MESH_MAX_LISTEN_PUBLIC) addresses")
        }
        if meshPeers.count > Int(RL_MESH_MAX_PEERS_PUBLIC) {
            throw ConfigurationError(flag: "--mesh-peer", "at most \(RL_MESH_MAX_PEERS_PUBLIC) peers")
        }
        guard let callbackHost, Self.ipBytes(callbackHost) != nil, !callbackHost.hasPrefix("[") else {
            throw ConfigurationError(
                flag: "--callback-host",
                "a cluster node needs the numeric address devices reach it at (CONNECT_REQUEST_TO names it)")
        }
        _ = try meshKey()
    }

    /// The core's own test (rl_addr_is_private), so check-config and the mesh agree.
    static func isPrivate(_ bytes: [UInt8]) -> Bool {
        let form = bytes.count == 4 ? [UInt8](repeating: 0, count: 10) + [0xff, 0xff] + bytes : bytes
        return form.count == 16 && rl_addr_is_private(form) != 0
    }

    /// The 32-byte cluster key from --mesh-key-file: 64 hex digits, in a file only its owner
    /// reads (whoever holds it can make nodes send connection requests).
    func meshKey() throws(ConfigurationError) -> [UInt8] {
        guard let path = meshKeyFile else {
            throw ConfigurationError(
                flag: "--mesh-key-file",
                "a cluster node needs the cluster key (head -c 32 /dev/urandom | xxd -p -c 64 > mesh.key)")
        }
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw ConfigurationError(flag: "--mesh-key-file", "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        if st.st_mode & 0o077 != 0 {
            throw ConfigurationError(
                flag: "--mesh-key-file",
                "\(path) is readable by others (mode \(String(st.st_mode & 0o777, radix: 8))): chmod 600 it")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError(flag: "--mesh-key-file", "cannot read \(path)")
        }
        let text = String(decoding: data, as: UTF8.self).trimmingWhitespace()
        guard text.count == 64, let key = Hex.decode(text), key.count == 32 else {
            throw ConfigurationError(
                flag: "--mesh-key-file", "\(path) does not hold 64 hex digits (32 bytes) and nothing else")
        }
        return key
    }
}

extension RelayCore {
    /// Joins the cluster before start: the node's number and key, its WAKE addresses, its peers.
    func joinCluster(_ configuration: RelayConfiguration) throws {
        guard configuration.isClustered, let host = configuration.callbackHost else { return }
        var key = try configuration.meshKey()
        defer { _ = key.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0) } }
        _ = try callReturningStatus("--node \(configuration.node)") {
            rl_core_cluster(pointer, UInt32(configuration.node), key, host, $0, $1)
        }
        for address in configuration.mesh {
            let floating = ListenAddress(address).map { configuration.isFloating(host: $0.host) } ?? false
            _ = try callReturningStatus("--mesh \(address)") {
                rl_core_mesh_listen(pointer, address, floating ? UInt32(RL_LISTEN_FREEBIND) : 0, $0, $1)
            }
        }
        for address in configuration.meshPeers {
            _ = try callReturningStatus("--mesh-peer \(address)") { rl_core_mesh_peer(pointer, address, $0, $1) }
        }
    }
}
