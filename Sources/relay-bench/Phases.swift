import CBench
import Foundation
import RelayControl

/// Phase 1: every device sends its period request and, once answered, a first NOTIFY_A.
struct Registration {
    let bench: Bench
    let sim: OpaquePointer
    let relay: RelayChild

    func run(report: Bool) throws {
        bench.log("registering \(bench.o.devices) devices")
        let n = Double(bench.o.devices)
        let udp0 = SystemInfo.udpCounters()
        guard let m0 = relay.scrape() else { throw BenchError("cannot scrape the relay's metrics") }
        let cpu0 = SystemInfo.cpuSeconds(relay.pid)
        var r = rb_reg_result()
        let t0 = Date()
        let rc = rb_sim_register(sim, 4096, max(60, n / 2000), &r)
        // Until the relay counted every NOTIFY_A, or its count stood still for 0.5 s (the
        // missing ones were lost on the way: see the drop counters).
        var last = -1.0
        var stillSince = Date()
        var counted = Date()
        let m1 = relay.waitMetrics(timeout: 30, interval: 0.02) { m in
            if m.notifyA != last {
                last = m.notifyA
                stillSince = Date()
                counted = Date()
            }
            return m.notifyA - m0.notifyA >= n || Date().timeIntervalSince(stillSince) > 0.5
        } ?? m0
        let seconds = counted.timeIntervalSince(t0)
        let cpu1 = SystemInfo.cpuSeconds(relay.pid)
        let udp1 = SystemInfo.udpCounters()
        guard report else {
            if rc != 0 { throw BenchError("registration incomplete: \(r.registered) of \(bench.o.devices)") }
            return
        }
        let s = bench.report.section("registration", "1. Registration: period request + first NOTIFY_A per device")
        s.add("devices", "devices", bench.o.devices)
        s.add("registered", "devices that got a verified PERIOD_INFO", Int(r.registered))
        s.add("relay_notify_a", "NOTIFY_A accepted by the relay", m1.notifyA - m0.notifyA)
        s.add("notify_a_lost", "first NOTIFY_A lost (sent, never counted)", Double(r.notify_a_sent) - (m1.notifyA - m0.notifyA))
        s.add("simulator_seconds", "simulator: first request to last NOTIFY_A sent", r.seconds, "s")
        s.add("seconds", "time to register all (until the relay's NOTIFY_A count stops)", seconds, "s")
        let dgrams = Double(r.requests_sent + r.notify_a_sent)
        s.add("datagrams_per_s", "datagrams to the relay per second", dgrams / seconds, "datagrams/s")
        s.add("devices_per_s", "devices registered per second", Double(r.registered) / seconds, "devices/s")
        s.add("period_requests_sent", "PERIOD_REQUEST sent (incl. retransmissions)", r.requests_sent)
        s.add("retransmits", "PERIOD_REQUEST retransmissions (1 s timeout)", r.retransmits)
        s.add("period_infos_bad", "PERIOD_INFO rejected by the simulator", r.infos_bad)
        s.add("relay_cpu_us_per_device", "relay CPU per registered device", (cpu1 - cpu0) / max(1, n) * 1e6, "µs")
        s.add("relay_dropped", "relay_datagrams_dropped_total delta", m1.dropped - m0.dropped)
        s.add("kernel_rcvbuf_errors", "kernel Udp RcvbufErrors delta", (udp1["RcvbufErrors"] ?? 0) - (udp0["RcvbufErrors"] ?? 0))
        s.add("kernel_in_errors", "kernel Udp InErrors delta", (udp1["InErrors"] ?? 0) - (udp0["InErrors"] ?? 0))
        s.add("epoch", "relay epoch", text: String(format: "%08x", r.epoch))
        s.add("period_s", "period / keepalive told", text: "\(r.period_s) s / \(r.keepalive_s) s")
        s.note("at most 4,096 period requests outstanding; each PERIOD_INFO is answered at once by that device's NOTIFY_A")
        s.note("relay drops by reason: \(m1.droppedByReason(since: m0))")
        if rc != 0 { throw BenchError("registration incomplete: \(r.registered) of \(bench.o.devices) devices") }
    }
}

/// Phase 3: the relay's resident memory per device, and mosquitto's per idle client.
struct Memory {
    let bench: Bench
    let relay: RelayChild

    func run(emptyRSS: Int64, loadedRSS: Int64) {
        let s = bench.report.section("memory", "3. Memory: relay RSS per device, mosquitto per idle client")
        let n = Double(bench.o.devices)
        let registered = SystemInfo.rss(relay.pid)
        s.add("rss_empty_bytes", "relay RSS, empty store (same --capacity)", emptyRSS, "bytes")
        s.add("rss_loaded_bytes", "relay RSS, devices loaded, none registered", loadedRSS, "bytes")
        s.add("rss_registered_bytes", "relay RSS, all devices registered", registered, "bytes")
        s.add("bytes_per_device", "per device: (registered - empty) / devices", Double(registered - emptyRSS) / n, "bytes")
        s.add("bytes_per_device_loaded", "per device: (loaded - empty) / devices", Double(loadedRSS - emptyRSS) / n, "bytes")
        if let m = relay.scrape(), m["relay_registry_capacity"] > 0 {
            s.add("registry_bytes", "relay_registry_bytes (reserved)", m["relay_registry_bytes"], "bytes")
            s.add("registry_bytes_per_slot", "registry bytes per capacity slot", m["relay_registry_bytes"] / m["relay_registry_capacity"], "bytes")
        }
        s.note("RSS includes the Swift control layer (the store read at start-up); the target is 64 bytes per device")
        Mosquitto(bench: bench).run(into: s)
    }
}

/// mosquitto holding idle MQTT clients, when it is installed.
struct Mosquitto {
    let bench: Bench
    let clients = 4000

    func run(into s: Section) {
        guard let bin = SystemInfo.which("mosquitto") else {
            s.add("mosquitto", "mosquitto baseline", text: "skipped")
            s.note("mosquitto is not installed (apt-get install -y mosquitto to add the MQTT baseline)")
            return
        }
        do {
            let port = SystemInfo.freePort()
            let conf = bench.tmp + "/mosquitto.conf"
            try "listener \(port) 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\nlog_dest stderr\n"
                .write(toFile: conf, atomically: true, encoding: .utf8)
            let child = try Child(name: "mosquitto", executable: bin, arguments: ["-c", conf], logPath: bench.tmp + "/mosquitto.log")
            bench.children.append(child)
            defer { _ = child.stop() }
            var fds: [Int32] = []
            defer { fds.forEach { close($0) } }
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline, mqttConnect(port: port, id: "probe") == nil { usleep(50_000) }
            usleep(200_000)
            let before = SystemInfo.rss(child.pid)
            for i in 0..<clients {
                guard let fd = mqttConnect(port: port, id: "bench-\(i)") else { break }
                fds.append(fd)
            }
            usleep(500_000)
            let after = SystemInfo.rss(child.pid)
            s.add("mosquitto_clients", "mosquitto idle clients connected", fds.count)
            s.add("mosquitto_rss_before_bytes", "mosquitto RSS, no clients", before, "bytes")
            s.add("mosquitto_rss_after_bytes", "mosquitto RSS, idle clients", after, "bytes")
            if !fds.isEmpty {
                s.add("mosquitto_bytes_per_client", "mosquitto per idle client (user space)", Double(after - before) / Double(fds.count), "bytes")
            }
            s.note("each MQTT client also holds a kernel TCP socket and an fd, not counted in RSS")
        } catch {
            s.note("mosquitto baseline failed: \(error)")
        }
    }

    /// An MQTT 3.1.1 CONNECT (clean session, keepalive 600 s); returns the fd after CONNACK.
    func mqttConnect(port: UInt16, id: String) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0 else {
            close(fd)
            return nil
        }
        let idBytes = Array(id.utf8)
        var variable: [UInt8] = [0, 4] + Array("MQTT".utf8) + [4, 2, 0x02, 0x58]
        variable += [UInt8(idBytes.count >> 8), UInt8(idBytes.count & 255)] + idBytes
        let packet: [UInt8] = [0x10, UInt8(variable.count)] + variable
        var ack = [UInt8](repeating: 0, count: 4)
        guard write(fd, packet, packet.count) == packet.count, read(fd, &ack, 4) == 4, ack[0] == 0x20, ack[3] == 0 else {
            close(fd)
            return nil
        }
        return fd
    }
}

/// Phase 2: the notify mix pushed as fast as one sender thread can, to a bare recvmmsg
/// receiver and then to the relay, from the same precomputed datagrams.
struct Steady {
    let bench: Bench
    let sim: OpaquePointer
    let relay: RelayChild

    func run() throws {
        let d = bench.o.duration
        let senders = UInt32(bench.o.senders)
        // Several senders empty a pool faster: give them more (48 bytes a datagram).
        let count = UInt64(min(d * 500_000 * Double(senders), senders > 1 ? 32_000_000 : 16_000_000))
        bench.log("building \(count) notifies")
        guard let pool = rb_pool_build(sim, count, bench.bPerA, 2) else { throw BenchError("cannot build the notify pool") }
        defer { rb_pool_free(pool) }
        let s = bench.report.section("steady", "2. Steady state: notify mix at the simulator's max rate, relay vs bare recvmmsg")
        s.add("mix", "mix", text: "1 NOTIFY_A : \(bench.bPerA) NOTIFY_B (period \(bench.o.period) s, keepalive \(bench.o.keepalive) s)")
        s.add("pool_build_s", "datagrams precomputed (tags included) in", rb_pool_build_seconds(pool), "s")

        // Bare receiver first (counters in the pool stay fresh for the relay).
        bench.log("steady state: bare receiver")
        var err = [CChar](repeating: 0, count: 256)
        guard let bare = rb_bare_start(&err, err.count) else { throw BenchError(cString(err)) }
        var bc0: UInt64 = 0, bcpu0: UInt64 = 0, bc1: UInt64 = 0, bcpu1: UInt64 = 0
        let udpB0 = SystemInfo.udpCounters()
        rb_bare_sample(bare, &bc0, &bcpu0)
        var br = rb_blast_result()
        rb_blast_parallel(sim, pool, rb_bare_port(bare), d, senders, &br)
        usleep(300_000)
        rb_bare_sample(bare, &bc1, &bcpu1)
        rb_bare_stop(bare)
        let udpB1 = SystemInfo.udpCounters()
        let bareGot = Double(bc1 - bc0)
        let bareRate = bareGot / br.seconds
        let bareCPU = Double(bcpu1 - bcpu0) / 1e9

        bench.log("steady state: relay")
        guard let m0 = relay.scrape() else { throw BenchError("cannot scrape the relay's metrics") }
        let cpu0 = SystemInfo.cpuSeconds(relay.pid)
        let udp0 = SystemInfo.udpCounters()
        var dev0 = rb_dev_stats()
        rb_sim_dev_stats(sim, &dev0)
        var rr = rb_blast_result()
        rb_blast_parallel(sim, pool, relay.udp, d, senders, &rr)
        var last = m0.rx
        let m1 = relay.waitMetrics(timeout: 5, interval: 0.2) { m in
            defer { last = m.rx }
            return m.rx == last && m.rx > m0.rx
        } ?? m0
        let cpu1 = SystemInfo.cpuSeconds(relay.pid)
        let udp1 = SystemInfo.udpCounters()
        var dev1 = rb_dev_stats()
        rb_sim_dev_stats(sim, &dev1)
        let relayGot = m1.rx - m0.rx
        let relayRate = relayGot / rr.seconds
        let relayCPU = cpu1 - cpu0
        let accepted = (m1.notifyA - m0.notifyA) + (m1.notifyB - m0.notifyB)

        s.add("bare_sent", "bare: datagrams sent", br.sent)
        s.add("bare_send_rate", "bare: sender rate", Double(br.sent) / br.seconds, "datagrams/s")
        s.add("bare_received", "bare: datagrams received", bareGot)
        s.add("bare_ingest_rate", "bare: ingest rate", bareRate, "datagrams/s")
        s.add("bare_cpu_ns_per_datagram", "bare: receiver CPU per datagram", bareCPU / max(1, bareGot) * 1e9, "ns")
        s.add("bare_kernel_rcvbuf_errors", "bare: kernel RcvbufErrors delta", (udpB1["RcvbufErrors"] ?? 0) - (udpB0["RcvbufErrors"] ?? 0))
        s.add("relay_sent", "relay: datagrams sent", rr.sent)
        s.add("relay_send_rate", "relay: sender rate", Double(rr.sent) / rr.seconds, "datagrams/s")
        s.add("relay_received", "relay: relay_datagrams_received_total delta", relayGot)
        s.add("relay_accepted", "relay: notifies accepted (A + B)", accepted)
        s.add("relay_acks", "relay: NOTIFY_ACKs the devices received (one per accepted notify)", Double(dev1.acks - dev0.acks))
        s.add("relay_ingest_rate", "relay: ingest rate", relayRate, "datagrams/s")
        s.add("relay_cpu_ns_per_datagram", "relay: CPU (user+sys) per datagram", relayCPU / max(1, relayGot) * 1e9, "ns")
        s.add("relay_cpu_share", "relay: CPU used during the run", relayCPU / rr.seconds * 100, "% of a core")
        s.add("relay_cores", "relay: cores used (relay CPU s / wall s of the blast)", relayCPU / rr.seconds, "cores")
        s.add("relay_threads", "relay: loop threads (relay_threads; absent: 1)", m1.loopThreads, "")
        s.add("relay_datagram_balance", "relay: datagrams per loop thread, max / mean (1 = even)",
              m1.balance("relay_thread_datagrams_received_total", since: m0), "")
        s.add("relay_dropped", "relay: relay_datagrams_dropped_total delta", m1.dropped - m0.dropped)
        s.add("relay_kernel_rcvbuf_errors", "relay: kernel RcvbufErrors delta", (udp1["RcvbufErrors"] ?? 0) - (udp0["RcvbufErrors"] ?? 0))
        s.add("relay_kernel_in_errors", "relay: kernel InErrors delta", (udp1["InErrors"] ?? 0) - (udp0["InErrors"] ?? 0))
        s.add("ingest_ratio", "ingest ratio relay / bare", bareRate > 0 ? relayRate / bareRate : .nan, "")
        s.add("cpu_ratio", "CPU per datagram ratio relay / bare", bareGot > 0 && bareCPU > 0 ? (relayCPU / max(1, relayGot)) / (bareCPU / bareGot) : .nan, "")
        let realistic = bench.realisticRate
        s.add("realistic_rate", "notify rate of \(bench.o.devices) devices at protocol intervals", realistic, "datagrams/s")
        s.add("realistic_cpu_share", "relay CPU at that rate (CPU per datagram x rate)", realistic * relayCPU / max(1, relayGot) * 100, "% of a core")
        s.note("relay drops by reason: \(m1.droppedByReason(since: m0))")
        s.note("\(senders == 1 ? "one sender thread" : "\(senders) sender threads, each the sockets of its share,") (sendmmsg, 64 per call) from \(bench.o.sockets) sockets; when both receivers keep up, the ratio shows the sender's limit, and CPU per datagram is the figure to compare")
        s.note("the bare receiver is one thread on one socket; the relay runs \(bench.threads) loop thread(s) (--threads)")
        s.note("the relay verifies every notify and answers each with a NOTIFY_ACK (sendmmsg per batch); the bare receiver does neither; the device thread reads the ACKs (their kernel drops count in RcvbufErrors)")
        s.note("CPU resolution: /proc/<pid>/stat ticks of 10 ms")
    }
}

/// Phase 4: terminals wake random devices through the HTTP front, under notify load.
final class Wakes {
    let bench: Bench
    let sim: OpaquePointer
    let relay: RelayChild
    private var background = 0.0 /* relay CPU (cores) the notify load costs by itself */

    init(bench: Bench, sim: OpaquePointer, relay: RelayChild) {
        self.bench = bench
        self.sim = sim
        self.relay = relay
    }

    func run() {
        let s = bench.report.section("wakes", "4. Wakes: terminal request -> CONNECT_REQUEST -> callback -> first byte")
        let load = min(bench.realisticRate, 200_000)
        rb_load_start(sim, load, bench.bPerA)
        let m0 = relay.scrape()
        let udp0 = SystemInfo.udpCounters()
        // What the background load alone costs the relay, so CPU per request counts the requests.
        let level = max(1, bench.o.duration / 2)
        let quiet = min(2.0, level / 2)
        let bg0 = SystemInfo.cpuSeconds(relay.pid)
        usleep(UInt32(quiet * 1e6))
        background = (SystemInfo.cpuSeconds(relay.pid) - bg0) / quiet
        s.add("background_cpu_share", "relay CPU with the background load alone", background * 100, "% of a core")
        for c in bench.o.levels {
            bench.log("wakes at concurrency \(c)")
            measure(s, prefix: "c\(c)", title: "live, concurrency \(c)", target: Int32(RB_TARGET_LIVE), concurrency: c, seconds: level)
        }
        let refusal = max(1, bench.o.duration / 5)
        measure(s, prefix: "offline", title: "offline devices (503), concurrency 8", target: Int32(RB_TARGET_OFFLINE), concurrency: 8, seconds: refusal)
        measure(s, prefix: "unknown", title: "unknown devices (404), concurrency 8", target: Int32(RB_TARGET_UNKNOWN), concurrency: 8, seconds: refusal)
        connectionBaseline(s, seconds: level)
        let sent = rb_load_stop(sim)
        let m1 = relay.scrape()
        let udp1 = SystemInfo.udpCounters()
        var ds = rb_dev_stats()
        rb_sim_dev_stats(sim, &ds)
        s.add("background_rate", "background notify load (protocol intervals, capped at 200k/s)", load, "datagrams/s")
        s.add("background_sent", "background notifies sent", sent)
        s.add("connect_requests", "CONNECT_REQUEST verified by devices (incl. retransmissions)", ds.connect_requests)
        s.add("connect_dup", "CONNECT_REQUEST retransmissions ignored", ds.connect_dup)
        s.add("callbacks_ok", "callbacks bound (status 0x00)", ds.callbacks_ok)
        s.add("callbacks_refused", "callbacks refused or failed", ds.callbacks_refused)
        if let m0, let m1 {
            s.add("relay_wakes_bound", "relay_wakes_total{bound} delta", m1["relay_wakes_total{outcome=\"bound\"}"] - m0["relay_wakes_total{outcome=\"bound\"}"])
            s.add("relay_wakes_timeout", "relay_wakes_total{timeout} delta", m1["relay_wakes_total{outcome=\"timeout\"}"] - m0["relay_wakes_total{outcome=\"timeout\"}"])
            s.add("relay_dropped", "relay_datagrams_dropped_total delta", m1.dropped - m0.dropped)
        }
        s.add("kernel_rcvbuf_errors", "kernel RcvbufErrors delta", (udp1["RcvbufErrors"] ?? 0) - (udp0["RcvbufErrors"] ?? 0))
        s.note("latency = TCP connect start to the first response byte, at the terminal; each link answers 13 bytes and closes")
        if let m0, let m1 {
            s.add("wake_balance", "wakes started per loop thread, max / mean (every level; 1 = even)",
                  m1.balance("relay_thread_wakes_started_total", since: m0), "")
        }
        s.note("terminals, simulated devices and the background sender share the bench process; the relay runs \(bench.threads) loop thread(s); \(ProcessInfo.processInfo.activeProcessorCount) cores in all")
    }

    /// The kernel's price of a connection, in the same run: nginx answering each terminal's
    /// one request on a new connection (13 bytes, like a simulated device), at concurrency 8.
    /// A wake costs the relay two connections (the terminal's and the device's callback).
    private func connectionBaseline(_ s: Section, seconds: Double) {
        guard let nginx = SystemInfo.which("nginx") else {
            s.note("nginx is not installed: no per-connection baseline (apt-get install -y nginx-light)")
            return
        }
        let port = SystemInfo.freePort()
        let prefix = bench.tmp + "/nginx-conn"
        let conf = """
            \(geteuid() == 0 ? "user root;" : "")
            worker_processes 1;
            daemon off;
            pid \(prefix)/nginx.pid;
            error_log \(prefix)/error.log warn;
            events { worker_connections 4096; }
            http {
                access_log off;
                server { listen 127.0.0.1:\(port); location / { return 200 "hello device\\n"; } }
            }
            """
        do {
            try FileManager.default.createDirectory(atPath: prefix + "/logs", withIntermediateDirectories: true)
            try conf.write(toFile: prefix + "/nginx.conf", atomically: true, encoding: .utf8)
            let child = try Child(name: "nginx conn", executable: nginx, arguments: ["-p", prefix, "-c", prefix + "/nginx.conf"],
                                  logPath: prefix + "/stdout.log")
            defer { _ = child.stop() }
            var buf = [CChar](repeating: 0, count: 256)
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline, rb_http_get(port, "/", nil, &buf, buf.count, 1000) != 200 { usleep(50_000) }
            bench.log("connection baseline: nginx")
            measure(s, prefix: "nginx_conn", title: "baseline: nginx, a new connection per request, concurrency 8",
                    target: Int32(RB_TARGET_LIVE), concurrency: 8, seconds: seconds, port: port, pid: child.pid)
            let level = bench.o.levels.contains(8) ? 8 : bench.o.levels[0]
            if let relayCPU = s.value("c\(level)_relay_cpu_us"), let nginxCPU = s.value("nginx_conn_relay_cpu_us") {
                s.add("wake_cpu_ratio", "relay CPU per wake (concurrency \(level)) / nginx CPU per connection (a wake is 2 connections)", relayCPU / nginxCPU, "")
            }
        } catch {
            s.note("per-connection baseline failed: \(error)")
        }
    }

    private func measure(_ s: Section, prefix: String, title: String, target: Int32, concurrency: Int, seconds: Double,
                         port: UInt16? = nil, pid: Int32? = nil) {
        let cap = UInt64(seconds * 100_000) + 1024
        var lat = [UInt32](repeating: 0, count: Int(cap))
        var r = rb_wake_result()
        let watched = pid ?? relay.pid
        let m0 = pid == nil ? relay.scrape() : nil
        let cpu0 = SystemInfo.treeCPUSeconds(watched)
        rb_wakes_run(sim, port ?? relay.http, target, UInt32(concurrency), seconds, cap, &lat, cap, &r)
        let cpu1 = SystemInfo.treeCPUSeconds(watched)
        let m1 = pid == nil ? relay.scrape() : nil
        let sorted = lat.prefix(Int(r.latencies)).sorted()
        func pct(_ q: Double) -> Double {
            guard !sorted.isEmpty else { return .nan }
            let i = min(sorted.count - 1, max(0, Int((q * Double(sorted.count)).rounded(.up)) - 1))
            return Double(sorted[i]) / 1000
        }
        s.add("\(prefix)_requests", "\(title): requests", r.requests)
        let ok = target == Int32(RB_TARGET_LIVE) ? r.status_2xx : (target == Int32(RB_TARGET_OFFLINE) ? r.status_503 : r.status_404)
        s.add("\(prefix)_per_s", "\(title): \(target == Int32(RB_TARGET_LIVE) ? "wakes (200)" : "refusals")/s", Double(ok) / r.seconds, "/s")
        s.add("\(prefix)_p50_ms", "\(title): p50", pct(0.50), "ms")
        s.add("\(prefix)_p90_ms", "\(title): p90", pct(0.90), "ms")
        s.add("\(prefix)_p99_ms", "\(title): p99", pct(0.99), "ms")
        s.add("\(prefix)_max_ms", "\(title): max", sorted.last.map { Double($0) / 1000 } ?? .nan, "ms")
        let who = pid == nil ? "relay" : "server"
        s.add("\(prefix)_relay_cpu_share", "\(title): \(who) CPU", (cpu1 - cpu0) / r.seconds * 100, "% of a core")
        s.add("\(prefix)_cores", "\(title): cores used (\(who) CPU s / wall s)", (cpu1 - cpu0) / max(0.001, r.seconds), "cores")
        if let m0, let m1, target == Int32(RB_TARGET_LIVE) {
            s.add("\(prefix)_wake_balance", "\(title): wakes started per loop thread, max / mean",
                  m1.balance("relay_thread_wakes_started_total", since: m0), "")
        }
        // CPU per answer is what scales: one core at 100 % would give 1e6 / this many per second.
        // The relay's excludes what the background notify load costs it meanwhile.
        let spent = max(0, (cpu1 - cpu0) - (pid == nil ? background * r.seconds : 0))
        s.add("\(prefix)_relay_cpu_us", "\(title): \(who) CPU per request\(pid == nil ? " (background load excluded)" : "")",
              spent / Double(max(1, r.requests)) * 1e6, "µs")
        s.add("\(prefix)_status", "\(title): statuses", text:
            "200:\(r.status_2xx) 404:\(r.status_404) 503:\(r.status_503) 504:\(r.status_504) other:\(r.status_other) errors:\(r.errors)")
    }
}
