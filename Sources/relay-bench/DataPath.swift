import CBench
import Foundation
import RelayControl

/// Phase 5: established sessions: small requests and bulk transfer with wrk.
///
/// The proxies are compared on one backend: a simulated device that serves HTTP itself on
/// its device links (as an embedded device's web server does) and on a plain TCP port. wrk
/// reaches it directly, through the relay (over device links), through an nginx reverse
/// proxy and through haproxy with and without splice: one proxy hop each, the same server
/// behind every hop. A second path shows the deployment with a `relay agent` in front of a
/// separate web server (nginx), next to that nginx served directly.
struct DataPath {
    let bench: Bench
    let sim: OpaquePointer
    let relay: RelayChild
    let store: DeviceStore
    let webSecret: [UInt8]

    struct WrkResult {
        var rps = Double.nan, bytesPerSecond = Double.nan, non2xx = 0
        var output = ""
    }

    struct Target {
        let key, label, base: String
        var header: String? = nil
        var pids: [Int32] = [] /* the proxy's processes, for its CPU per request */
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
        // The web device: simulated device 0, answering on its links and on `web`.
        var err = [CChar](repeating: 0, count: 256)
        let web = rb_sim_web_start(sim, 0, &err, err.count)
        guard web != 0 else { throw BenchError("web device: \(cString(err))") }
        var idBuf = [CChar](repeating: 0, count: 16)
        rb_device_id(0, &idBuf)
        let webID = cString(idBuf)
        let webAuth = "Authorization: Bearer \(try store.mintToken(id: webID, ttl: .seconds(3600)))"

        let root = bench.tmp + "/www"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try Data(repeating: 0x61, count: Int(RB_WEB_SMALL)).write(to: URL(fileURLWithPath: root + "/small.bin"))
        try Data(count: Int(RB_WEB_BULK)).write(to: URL(fileURLWithPath: root + "/bulk.bin"))
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
                upstream web { server 127.0.0.1:\(web); keepalive 64; }
                server {
                    listen 127.0.0.1:\(proxyPort);
                    location / {
                        proxy_pass http://web;
                        proxy_http_version 1.1;
                        proxy_set_header Connection "";
                        proxy_max_temp_file_size 0;
                    }
                }
            }
            """
        let proxyPid = try startNginx(nginx, name: "proxy", conf: proxyConf)

        var haproxyPorts: [(key: String, label: String, port: UInt16, pid: Int32)] = []
        if let haproxy = SystemInfo.which("haproxy") {
            for (key, label, splice) in [("haproxy", "through haproxy", false),
                                         ("haproxy_splice", "through haproxy with splice", true)] {
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
                    \(splice ? "    option splice-request\n    option splice-response" : "")
                    frontend bench
                        bind 127.0.0.1:\(port)
                        default_backend web
                    backend web
                        http-reuse always
                        server s1 127.0.0.1:\(web)
                    """
                let path = bench.tmp + "/\(key).cfg"
                try (conf + "\n").write(toFile: path, atomically: true, encoding: .utf8)
                let child = try Child(name: key, executable: haproxy, arguments: ["-f", path, "-db"],
                                      logPath: bench.tmp + "/\(key).log")
                bench.children.append(child)
                haproxyPorts.append((key, label, port, child.pid))
            }
        } else {
            s.note("haproxy is not installed: its baselines are skipped (apt-get install -y haproxy)")
        }

        // The agent path: a real `relay agent` (device web-0) in front of the nginx origin.
        let secretHex = webSecret.map { String(format: "%02x", $0) }.joined()
        let agent = try Child(
            name: "relay agent", executable: bench.relayBinary,
            arguments: ["agent", "--relay", "127.0.0.1:\(relay.udp)", "--id", "web-0", "--key", secretHex,
                        "--forward", "127.0.0.1:\(origin)", "--log-level", "warning"],
            logPath: bench.tmp + "/agent.log")
        bench.children.append(agent)
        let agentAuth = "Authorization: Bearer \(try store.mintToken(id: "web-0", ttl: .seconds(3600)))"
        var buf = [CChar](repeating: 0, count: 4096)
        for (path, auth) in [("/d/web-0/small.bin", agentAuth), ("/d/\(webID)/small.bin", webAuth)] {
            let deadline = Date().addingTimeInterval(20)
            var ready = false
            while Date() < deadline {
                if rb_http_get(relay.http, path, auth + "\r\n", &buf, buf.count, 3000) == 200 {
                    ready = true
                    break
                }
                usleep(100_000)
            }
            guard ready else { throw BenchError("\(path) never answered 200 through the relay") }
        }
        for port in [web, origin, proxyPort] + haproxyPorts.map(\.port) {
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline, rb_http_get(port, "/small.bin", nil, &buf, buf.count, 1000) != 200 { usleep(50_000) }
        }

        let secs = Int(max(1, (bench.o.duration / 4).rounded())) /* 3 s at the default 10 */
        var targets = [
            Target(key: "direct", label: "direct to the web device", base: "http://127.0.0.1:\(web)"),
            Target(key: "relay", label: "through the relay", base: "http://127.0.0.1:\(relay.http)/d/\(webID)", header: webAuth,
                   pids: [relay.pid]),
            Target(key: "nginx", label: "through nginx proxy", base: "http://127.0.0.1:\(proxyPort)", pids: [proxyPid]),
        ]
        targets += haproxyPorts.map { Target(key: $0.key, label: $0.label, base: "http://127.0.0.1:\($0.port)", pids: [$0.pid]) }
        targets += [
            Target(key: "origin", label: "direct to nginx (the agent's web server)", base: "http://127.0.0.1:\(origin)"),
            Target(key: "agent", label: "through the relay and a relay agent to nginx", base: "http://127.0.0.1:\(relay.http)/d/web-0",
                   header: agentAuth, pids: [relay.pid, agent.pid]),
        ]
        var small: [String: Double] = [:], bulkRate: [String: Double] = [:]
        var smallCPU: [String: Double] = [:], bulkCPU: [String: Double] = [:]
        func cpu(_ pids: [Int32]) -> Double { pids.reduce(0) { $0 + SystemInfo.treeCPUSeconds($1) } }
        for t in targets {
            bench.log("data path: \(t.label)")
            let c0 = cpu(t.pids)
            let r1 = runWrk(wrk, url: t.base + "/small.bin", header: t.header, connections: 32, seconds: secs)
            let c1 = cpu(t.pids)
            let r2 = runWrk(wrk, url: t.base + "/bulk.bin", header: t.header, connections: 1, seconds: secs)
            let c2 = cpu(t.pids)
            small[t.key] = r1.rps
            bulkRate[t.key] = r2.bytesPerSecond
            s.add("small_rps_\(t.key)", "small GET (128 B, wrk -t1 -c32), \(t.label)", r1.rps, "requests/s")
            s.add("bulk_mibps_\(t.key)", "bulk GET (64 MiB, wrk -t1 -c1), \(t.label)", r2.bytesPerSecond / 1_048_576, "MiB/s")
            if !t.pids.isEmpty {
                // CPU per unit of work: what a proxy costs, less sensitive than rates to who else runs.
                smallCPU[t.key] = (c1 - c0) / max(1, r1.rps * Double(secs)) * 1e6
                bulkCPU[t.key] = (c2 - c1) / max(1e-9, r2.bytesPerSecond * Double(secs) / 1_048_576) * 1e3
                s.add("small_cpu_us_\(t.key)", "proxy CPU per small request, \(t.label)", smallCPU[t.key]!, "µs")
                s.add("bulk_cpu_ms_per_mib_\(t.key)", "proxy CPU per bulk MiB, \(t.label)", bulkCPU[t.key]!, "ms/MiB")
            }
            if !r1.rps.isFinite || !r2.bytesPerSecond.isFinite {
                s.note("\(t.label): wrk gave no figure: \(r1.output.suffix(300)) \(r2.output.suffix(300))")
                for c in bench.children where c.name.hasPrefix("haproxy") { s.note("\(c.name) log: \(c.log.suffix(400))") }
            }
            if r1.non2xx + r2.non2xx > 0 { s.note("\(t.label): \(r1.non2xx + r2.non2xx) non-2xx responses") }
        }
        func ratio(_ a: String, _ b: String, _ what: String, _ table: [String: Double], _ key: String) {
            guard let base = table[b] else { return }
            s.add(key, what, (table[a] ?? .nan) / base, "")
        }
        for base in ["direct", "nginx", "haproxy", "haproxy_splice"] {
            ratio("relay", base, "small requests: relay / \(base)", small, "small_ratio_relay_\(base)")
            ratio("relay", base, "bulk throughput: relay / \(base)", bulkRate, "bulk_ratio_relay_\(base)")
        }
        for base in ["nginx", "haproxy", "haproxy_splice"] {
            ratio(base, "relay", "proxy CPU per small request: \(base) / relay", smallCPU, "small_cpu_ratio_\(base)_relay")
            ratio(base, "relay", "proxy CPU per bulk MiB: \(base) / relay", bulkCPU, "bulk_cpu_ratio_\(base)_relay")
        }
        ratio("agent", "origin", "small requests: relay + agent / nginx direct", small, "small_ratio_agent_origin")
        ratio("agent", "origin", "bulk throughput: relay + agent / nginx direct", bulkRate, "bulk_ratio_agent_origin")
        s.note("each run lasts \(secs) s; nginx and haproxy with one worker/thread; the relay with \(bench.threads) loop thread(s) (wrk's connections all come from 127.0.0.1)")
        s.note("direct, relay, nginx and haproxy reach the same web device (simulated device 0): it serves keep-alive HTTP on its device links and on a TCP port")
        s.note("the agent path adds a `relay agent` process and a hop: terminal -> relay -> agent -> nginx")
    }

    @discardableResult
    private func startNginx(_ nginx: String, name: String, conf: String) throws -> Int32 {
        let prefix = bench.tmp + "/nginx-\(name)"
        try FileManager.default.createDirectory(atPath: prefix + "/logs", withIntermediateDirectories: true)
        let path = prefix + "/nginx.conf"
        try conf.write(toFile: path, atomically: true, encoding: .utf8)
        let child = try Child(name: "nginx \(name)", executable: nginx, arguments: ["-p", prefix, "-c", path],
                              logPath: bench.tmp + "/nginx-\(name).log")
        bench.children.append(child)
        return child.pid
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
