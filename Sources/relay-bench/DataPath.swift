import CBench
import Foundation
import RelayControl

/// Phase 5: established sessions: small requests and bulk transfer with wrk, through the
/// relay (a real `relay agent` in front of nginx), directly to nginx, and through haproxy
/// and an nginx reverse proxy when installed.
struct DataPath {
    let bench: Bench
    let relay: RelayChild
    let store: DeviceStore
    let webSecret: [UInt8]

    struct WrkResult {
        var rps = Double.nan, bytesPerSecond = Double.nan, non2xx = 0
        var output = ""
    }

    func run() {
        let s = bench.report.section("datapath", "5. Data path over established sessions (wrk)")
        guard let nginx = SystemInfo.which("nginx") else {
            s.skipped = "nginx is not installed (apt-get install -y nginx-light wrk haproxy)"
            return
        }
        guard let wrk = SystemInfo.which("wrk") else {
            s.skipped = "wrk is not installed (apt-get install -y wrk)"
            return
        }
        do {
            try measure(s, nginx: nginx, wrk: wrk)
        } catch {
            s.note("data path failed: \(error)")
        }
    }

    private func measure(_ s: Section, nginx: String, wrk: String) throws {
        let root = bench.tmp + "/www"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try Data(repeating: 0x61, count: 128).write(to: URL(fileURLWithPath: root + "/small.bin"))
        let bulk = Data(count: 64 << 20)
        try bulk.write(to: URL(fileURLWithPath: root + "/bulk.bin"))
        let user = geteuid() == 0 ? "user root;\n" : ""

        let origin = SystemInfo.freePort()
        let originConf = """
            \(user)worker_processes 1;
            daemon off;
            pid \(bench.tmp)/nginx-origin.pid;
            error_log \(bench.tmp)/nginx-origin.err warn;
            events { worker_connections 4096; }
            http {
                access_log off;
                sendfile on;
                tcp_nopush on;
                keepalive_requests 10000000;
                default_type application/octet-stream;
                server { listen 127.0.0.1:\(origin); root \(root); }
            }
            """
        try startNginx(nginx, name: "origin", conf: originConf)

        let proxyPort = SystemInfo.freePort()
        let proxyConf = """
            \(user)worker_processes 1;
            daemon off;
            pid \(bench.tmp)/nginx-proxy.pid;
            error_log \(bench.tmp)/nginx-proxy.err warn;
            events { worker_connections 4096; }
            http {
                access_log off;
                keepalive_requests 10000000;
                upstream origin { server 127.0.0.1:\(origin); keepalive 64; }
                server {
                    listen 127.0.0.1:\(proxyPort);
                    location / {
                        proxy_pass http://origin;
                        proxy_http_version 1.1;
                        proxy_set_header Connection "";
                        proxy_max_temp_file_size 0;
                    }
                }
            }
            """
        try startNginx(nginx, name: "proxy", conf: proxyConf)

        var haproxyPort: UInt16?
        if let haproxy = SystemInfo.which("haproxy") {
            let port = SystemInfo.freePort()
            let conf = """
                global
                    nbthread 1
                    maxconn 4000
                defaults
                    mode http
                    timeout connect 5s
                    timeout client 60s
                    timeout server 60s
                    option http-keep-alive
                frontend bench
                    bind 127.0.0.1:\(port)
                    default_backend origin
                backend origin
                    http-reuse always
                    server s1 127.0.0.1:\(origin)
                """
            let path = bench.tmp + "/haproxy.cfg"
            try (conf + "\n").write(toFile: path, atomically: true, encoding: .utf8)
            bench.children.append(try Child(name: "haproxy", executable: haproxy, arguments: ["-f", path, "-db"],
                                            logPath: bench.tmp + "/haproxy.log"))
            haproxyPort = port
        } else {
            s.note("haproxy is not installed: its baseline is skipped (apt-get install -y haproxy)")
        }

        // The device: a real agent in front of the origin.
        let secretHex = webSecret.map { String(format: "%02x", $0) }.joined()
        bench.children.append(try Child(
            name: "relay agent", executable: bench.relayBinary,
            arguments: ["agent", "--relay", "127.0.0.1:\(relay.udp)", "--id", "web-0", "--key", secretHex,
                        "--forward", "127.0.0.1:\(origin)", "--log-level", "warning"],
            logPath: bench.tmp + "/agent.log"))
        let token = try store.mintToken(id: "web-0", ttl: .seconds(3600))
        let auth = "Authorization: Bearer \(token)"
        var buf = [CChar](repeating: 0, count: 4096)
        let deadline = Date().addingTimeInterval(20)
        var ready = false
        while Date() < deadline {
            if rb_http_get(relay.http, "/d/web-0/small.bin", auth + "\r\n", &buf, buf.count, 3000) == 200 {
                ready = true
                break
            }
            usleep(100_000)
        }
        guard ready else { throw BenchError("the agent's page never answered 200 through the relay") }
        for port in [origin, proxyPort] + (haproxyPort.map { [$0] } ?? []) {
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline, rb_http_get(port, "/small.bin", nil, &buf, buf.count, 1000) != 200 { usleep(50_000) }
        }

        let secs = Int(max(1, (bench.o.duration / 3).rounded()))
        var targets: [(key: String, label: String, base: String, header: String?)] = [
            ("direct", "direct to nginx", "http://127.0.0.1:\(origin)", nil),
            ("relay", "through the relay", "http://127.0.0.1:\(relay.http)/d/web-0", auth),
            ("nginx", "through nginx proxy", "http://127.0.0.1:\(proxyPort)", nil),
        ]
        if let haproxyPort { targets.append(("haproxy", "through haproxy", "http://127.0.0.1:\(haproxyPort)", nil)) }
        var small: [String: Double] = [:], bulkRate: [String: Double] = [:]
        for t in targets {
            bench.log("data path: \(t.label)")
            let r1 = runWrk(wrk, url: t.base + "/small.bin", header: t.header, connections: 32, seconds: secs)
            let r2 = runWrk(wrk, url: t.base + "/bulk.bin", header: t.header, connections: 1, seconds: secs)
            small[t.key] = r1.rps
            bulkRate[t.key] = r2.bytesPerSecond
            s.add("small_rps_\(t.key)", "small GET (128 B, wrk -t1 -c32), \(t.label)", r1.rps, "requests/s")
            s.add("bulk_mibps_\(t.key)", "bulk GET (64 MiB, wrk -t1 -c1), \(t.label)", r2.bytesPerSecond / 1_048_576, "MiB/s")
            if !r1.rps.isFinite || !r2.bytesPerSecond.isFinite {
                s.note("\(t.label): wrk gave no figure: \(r1.output.suffix(300)) \(r2.output.suffix(300))")
                for c in bench.children where c.name == "haproxy" { s.note("haproxy log: \(c.log.suffix(400))") }
            }
            if r1.non2xx + r2.non2xx > 0 { s.note("\(t.label): \(r1.non2xx + r2.non2xx) non-2xx responses") }
        }
        for base in ["direct", "nginx", "haproxy"] where small[base] != nil {
            s.add("small_ratio_relay_\(base)", "small requests: relay / \(base)", (small["relay"] ?? .nan) / small[base]!, "")
            s.add("bulk_ratio_relay_\(base)", "bulk throughput: relay / \(base)", (bulkRate["relay"] ?? .nan) / bulkRate[base]!, "")
        }
        s.note("each run lasts \(secs) s; nginx and haproxy with one worker/thread, like the relay's one loop thread; the relay path includes the `relay agent` process")
        s.note("haproxy runs as a plain HTTP proxy (no splice options)")
    }

    private func startNginx(_ nginx: String, name: String, conf: String) throws {
        let prefix = bench.tmp + "/nginx-\(name)"
        try FileManager.default.createDirectory(atPath: prefix + "/logs", withIntermediateDirectories: true)
        let path = prefix + "/nginx.conf"
        try conf.write(toFile: path, atomically: true, encoding: .utf8)
        bench.children.append(try Child(name: "nginx \(name)", executable: nginx, arguments: ["-p", prefix, "-c", path],
                                        logPath: bench.tmp + "/nginx-\(name).log"))
    }

    private func runWrk(_ wrk: String, url: String, header: String?, connections: Int, seconds: Int) -> WrkResult {
        var args = ["-t1", "-c\(connections)", "-d\(seconds)s", "--latency"]
        if let header { args += ["-H", header] }
        args.append(url)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: wrk)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        var result = WrkResult()
        do {
            try p.run()
            ChildRegistry.add(p.processIdentifier)
            let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            ChildRegistry.remove(p.processIdentifier)
            result.output = out
            for line in out.split(separator: "\n") {
                let parts = line.split(separator: " ", omittingEmptySubsequences: true)
                if line.hasPrefix("Requests/sec:"), parts.count >= 2 { result.rps = Double(parts[1]) ?? .nan }
                if line.hasPrefix("Transfer/sec:"), parts.count >= 2 { result.bytesPerSecond = DataPath.bytes(String(parts[1])) }
                if line.contains("Non-2xx or 3xx responses:"), let last = parts.last { result.non2xx = Int(last) ?? 0 }
            }
        } catch {
            bench.log("wrk failed: \(error)")
        }
        return result
    }

    /// wrk's "1.23GB" (powers of 1024) in bytes.
    static func bytes(_ text: String) -> Double {
        let units: [(String, Double)] = [("GB", 1_073_741_824), ("MB", 1_048_576), ("KB", 1024), ("B", 1)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            return (Double(text.dropLast(suffix.count)) ?? .nan) * factor
        }
        return .nan
    }
}
