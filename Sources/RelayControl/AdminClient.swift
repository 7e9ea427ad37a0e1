import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The CLI's client for a running relay's admin API on the same machine: it reads
/// `<data>/admin.json` (address and local key, written by the relay) and speaks plain
/// HTTP/1.1 over a socket, with short timeouts. Nil / a thrown error means "no running relay
/// to ask": the CLI then works on the store alone, as without a relay.
public struct AdminClient: Sendable {
    public let endpoint: AdminEndpoint
    let host: String
    let port: UInt16

    public struct Reply: Sendable {
        public let status: Int
        public let body: Data
        public func json() -> Any? { try? JSONSerialization.jsonObject(with: body) }
    }

    public struct Unreachable: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// The client for the relay using `dataDirectory`, when it wrote admin.json over plain
    /// HTTP (with TLS the CLI falls back to the store) and that process is alive.
    public init?(dataDirectory: String) {
        guard let endpoint = AdminEndpoint.read(dataDirectory: dataDirectory), !endpoint.tls,
            kill(endpoint.pid, 0) == 0 || errno == EPERM,
            let rest = endpoint.url.split(separator: "/", omittingEmptySubsequences: true).last,
            let address = ListenAddress(String(rest))
        else { return nil }
        self.endpoint = endpoint
        self.host = address.isIPv6 ? String(address.host.dropFirst().dropLast()) : address.host
        self.port = address.port
    }

    /// One request; `timeout` bounds connecting, sending and reading.
    public func request(_ method: String, _ path: String, json: Any? = nil, timeout: Double = 5) throws -> Reply {
        var body = Data()
        if let json { body = try JSONSerialization.data(withJSONObject: json) }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nAuthorization: Bearer \(endpoint.key)\r\n"
        head += "Connection: close\r\nContent-Length: \(body.count)\r\n"
        if json != nil { head += "Content-Type: application/json\r\n" }
        head += "\r\n"
        let fd = try connect(timeout: timeout)
        defer { close(fd) }
        var out = Data(head.utf8)
        out.append(body)
        try out.withUnsafeBytes { raw in
            var sent = 0
            while sent < raw.count {
                let n = send(fd, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
                guard n > 0 else { throw Unreachable(description: "send: \(String(cString: strerror(errno)))") }
                sent += n
            }
        }
        var response = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n == 0 { break }
            guard n > 0 else { throw Unreachable(description: "recv: \(String(cString: strerror(errno)))") }
            response.append(contentsOf: buffer[0..<n])
            if response.count > 64 << 20 { throw Unreachable(description: "response too large") }
        }
        guard let split = response.range(of: Data("\r\n\r\n".utf8)) else {
            throw Unreachable(description: "malformed response")
        }
        let headText = String(decoding: response[..<split.lowerBound], as: UTF8.self)
        let statusLine = headText.split(separator: "\r\n").first ?? ""
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { throw Unreachable(description: "malformed status line") }
        var payload = Data(response[split.upperBound...])
        if headText.lowercased().contains("transfer-encoding: chunked") { payload = Self.dechunk(payload) }
        return Reply(status: status, body: payload)
    }

    private func connect(timeout: Double) throws -> Int32 {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &res) == 0, let info = res else {
            throw Unreachable(description: "cannot resolve \(host)")
        }
        defer { freeaddrinfo(res) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Unreachable(description: "socket: \(String(cString: strerror(errno)))") }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw Unreachable(description: "connect \(host):\(port): \(why)")
        }
        return fd
    }

    static func dechunk(_ data: Data) -> Data {
        var out = Data()
        var rest = data[...]
        while let lineEnd = rest.range(of: Data("\r\n".utf8)) {
            let sizeText = String(decoding: rest[..<lineEnd.lowerBound], as: UTF8.self)
            guard let size = Int(sizeText.split(separator: ";").first ?? "", radix: 16), size > 0 else { break }
            let start = lineEnd.upperBound
            guard rest.distance(from: start, to: rest.endIndex) >= size else { break }
            let end = rest.index(start, offsetBy: size)
            out.append(rest[start..<end])
            rest = rest[end...].dropFirst(2)
        }
        return out
    }
}
