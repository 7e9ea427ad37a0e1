import CBench
import Foundation

/// What /proc tells about this machine, a process and the kernel's UDP counters.
enum SystemInfo {
    static func read(_ path: String) -> String {
        (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    }

    static var machine: [(String, String)] {
        let cpuinfo = read("/proc/cpuinfo")
        let model = cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { $0.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "" } ?? "unknown"
        let kernel = read("/proc/sys/kernel/osrelease").trimmingCharacters(in: .whitespacesAndNewlines)
        let memKB = read("/proc/meminfo").split(separator: "\n").first { $0.hasPrefix("MemTotal") }
            .flatMap { $0.split(separator: " ").dropFirst().first.flatMap { Int64($0) } } ?? 0
        let rmem = read("/proc/sys/net/core/rmem_max").trimmingCharacters(in: .whitespacesAndNewlines)
        return [
            ("nproc", "\(ProcessInfo.processInfo.activeProcessorCount)"),
            ("model_name", model),
            ("kernel", kernel),
            ("memory_gib", String(format: "%.1f", Double(memKB) / 1_048_576)),
            ("net_core_rmem_max", rmem),
        ]
    }

    /// VmRSS of `pid` in bytes.
    static func rss(_ pid: Int32) -> Int64 {
        for line in read("/proc/\(pid)/status").split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Int64(parts[1]) { return kb * 1024 }
        }
        return 0
    }

    /// utime + stime of `pid` in seconds.
    static func cpuSeconds(_ pid: Int32) -> Double {
        let stat = read("/proc/\(pid)/stat")
        guard let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the comm field: state is fields[0]; utime is field 14 of the line, so [11], stime [12].
        guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// CPU seconds of `pid` and its direct children (an nginx master and its worker).
    static func treeCPUSeconds(_ pid: Int32) -> Double {
        var total = cpuSeconds(pid)
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for e in entries {
            guard let child = Int32(e) else { continue }
            let stat = read("/proc/\(child)/stat")
            guard let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, Int32(fields[1]) == pid { total += cpuSeconds(child) }
        }
        return total
    }

    /// The Udp line of /proc/net/snmp as a name -> value map (InErrors, RcvbufErrors, ...).
    static func udpCounters() -> [String: Int64] {
        let lines = read("/proc/net/snmp").split(separator: "\n").filter { $0.hasPrefix("Udp:") }
        guard lines.count >= 2 else { return [:] }
        let names = lines[0].split(separator: " ").dropFirst()
        let values = lines[1].split(separator: " ").dropFirst()
        var out: [String: Int64] = [:]
        for (n, v) in zip(names, values) { out[String(n)] = Int64(v) ?? 0 }
        return out
    }

    static func which(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let dirs = path.split(separator: ":").map(String.init) + ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        for dir in dirs where !dir.isEmpty {
            let candidate = dir + "/" + name
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// A free TCP port on 127.0.0.1 (bound, read, released: fine for a bench on loopback).
    static func freePort() -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return UInt16(bigEndian: addr.sin_port)
    }

    static func raiseFileLimit() {
        var lim = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) == 0 {
            lim.rlim_cur = lim.rlim_max
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim)
        }
    }
}

/// The relay's Prometheus text, as "name{labels}" -> value.
struct Metrics {
    let values: [String: Double]

    static func scrape(port: UInt16) -> Metrics? {
        var buf = [CChar](repeating: 0, count: 1 << 18)  // per-thread series at up to 64 loops
        let status = rb_http_get(port, "/metrics", nil, &buf, buf.count, 2000)
        guard status == 200 else { return nil }
        let text = cString(buf)
        var values: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let v = Double(line[line.index(after: space)...]) else { continue }
            values[String(line[..<space])] = v
        }
        return Metrics(values: values)
    }

    subscript(_ name: String) -> Double { values[name] ?? 0 }

    /// relay_threads, or 1 when this core does not report it (a core without loop threads).
    var loopThreads: Double { values["relay_threads"] ?? 1 }

    /// A per-thread family (`relay_thread_..._total{thread="I"}`) as thread -> value; empty
    /// when the relay does not report it.
    func perThread(_ name: String) -> [Int: Double] {
        var out: [Int: Double] = [:]
        let prefix = name + "{"
        for (key, v) in values where key.hasPrefix(prefix) {
            guard let r = key.range(of: "thread=\""), let end = key[r.upperBound...].firstIndex(of: "\""),
                let i = Int(key[r.upperBound..<end])
            else { continue }
            out[i, default: 0] += v
        }
        return out
    }

    /// How evenly the loops shared `name` since `old`: the busiest thread's delta over the
    /// mean delta (1 = even; N = one thread of N did everything). Without the per-thread
    /// family the relay counts as one thread: 1. NaN when nothing moved.
    func balance(_ name: String, since old: Metrics) -> Double {
        let now = perThread(name), before = old.perThread(name)
        guard !now.isEmpty else { return 1 }
        let deltas = now.map { $0.value - (before[$0.key] ?? 0) }
        let mean = deltas.reduce(0, +) / Double(max(1, Int(loopThreads), deltas.count))
        guard mean > 0 else { return .nan }
        return (deltas.max() ?? 0) / mean
    }

    var rx: Double { self["relay_datagrams_received_total"] }
    var notifyA: Double { self["relay_notify_total{kind=\"a\"}"] }
    var notifyB: Double { self["relay_notify_total{kind=\"b\"}"] }
    var dropped: Double {
        values.filter { $0.key.hasPrefix("relay_datagrams_dropped_total") }.values.reduce(0, +)
    }
    /// relay_datagrams_dropped_total{kind=...,reason=...} summed over the kinds.
    func dropped(reason: String) -> Double {
        values.filter { $0.key.hasPrefix("relay_datagrams_dropped_total{") && $0.key.contains("reason=\"\(reason)\"") }
            .values.reduce(0, +)
    }
    func droppedByReason(since old: Metrics) -> String {
        let reasons = ["malformed", "unknown_device", "bad_auth", "replay", "stale_epoch", "old_version"]
        return reasons.map { r -> String in
            let n = dropped(reason: r) - old.dropped(reason: r)
            return "\(r)=\(Int64(n))"
        }.joined(separator: " ")
    }
}

/// The text of a NUL-terminated C buffer.
func cString(_ buf: [CChar]) -> String {
    String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
