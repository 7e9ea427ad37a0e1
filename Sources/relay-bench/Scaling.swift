import Foundation

/// `--threads 1,2,4`: the same run at each loop thread count, every figure that scales side
/// by side, with its ratio to the first count (the baseline of this comparison, measured in
/// the same invocation on the same machine), and for rates the scaling efficiency
/// rate(N) / ((N / N1) x rate(N1)): 1.0 is perfectly linear.
struct Scaling {
    let runs: [(threads: Int, report: Report)]

    /// How a figure reads: a rate grows with threads (efficiency shown), a cost per unit and
    /// the rest are shown with their ratio only.
    enum Kind { case rate, cost, plain }

    struct Row {
        let key: String
        let label: String
        let unit: String
        let kind: Kind
        let values: [Double?]
    }

    /// (section, figure key, label, kind) of every figure compared, in report order.
    private var wanted: [(String, String, String, Kind)] {
        var out: [(String, String, String, Kind)] = [
            ("registration", "relay_cpu_us_per_device", "registration: relay CPU per registered device", .cost),
            ("steady", "relay_ingest_rate", "steady: relay ingest rate", .rate),
            ("steady", "relay_cpu_ns_per_datagram", "steady: relay CPU per datagram", .cost),
            ("steady", "relay_cores", "steady: relay cores used", .plain),
            ("steady", "relay_datagram_balance", "steady: datagrams per loop thread, max / mean", .plain),
            ("steady", "relay_dropped", "steady: relay_datagrams_dropped_total delta", .plain),
            ("steady", "relay_kernel_rcvbuf_errors", "steady: kernel RcvbufErrors delta", .plain),
        ]
        for level in levels {
            let t = "wakes c=\(level)"
            out += [
                ("wakes", "c\(level)_per_s", "\(t): wakes answered 200", .rate),
                ("wakes", "c\(level)_p99_ms", "\(t): p99", .plain),
                ("wakes", "c\(level)_relay_cpu_us", "\(t): relay CPU per wake", .cost),
                ("wakes", "c\(level)_cores", "\(t): relay cores used", .plain),
                ("wakes", "c\(level)_wake_balance", "\(t): wakes started per loop thread, max / mean", .plain),
            ]
        }
        out += [
            ("wakes", "wake_balance", "wakes (every level): wakes started per loop thread, max / mean", .plain),
            ("datapath", "small_rps_relay", "data path: small requests/s through the relay (wrk -t1 -c32)", .rate),
            ("datapath", "small_cpu_us_relay", "data path: relay CPU per small request", .cost),
            ("datapath", "bulk_mibps_relay", "data path: bulk MiB/s through the relay (wrk -c1)", .plain),
            ("relay", "threads_reported", "loop threads the relay reports (relay_threads; absent: 1)", .plain),
            ("relay", "cores_whole_run", "cores used, whole run", .plain),
        ]
        return out
    }

    /// The wake concurrency levels, from the first run's figures.
    private var levels: [Int] {
        guard let wakes = runs.first?.report.sections.first(where: { $0.key == "wakes" }) else { return [] }
        return wakes.figures.compactMap { f -> Int? in
            guard f.key.hasPrefix("c"), f.key.hasSuffix("_per_s") else { return nil }
            return Int(f.key.dropFirst().dropLast("_per_s".count))
        }
    }

    var rows: [Row] {
        wanted.compactMap { section, key, label, kind in
            var unit = ""
            let values = runs.map { run -> Double? in
                guard let s = run.report.sections.first(where: { $0.key == section }),
                    let f = s.figures.last(where: { $0.key == key })
                else { return nil }
                unit = f.unit
                return s.value(key)
            }
            return values.contains { $0 != nil } ? Row(key: "\(section).\(key)", label: label, unit: unit, kind: kind, values: values) : nil
        }
    }

    /// value(N) / value(N1), and for rates the efficiency rate(N) / ((N / N1) x rate(N1)).
    func ratios(_ row: Row) -> (ratio: [Double], efficiency: [Double]) {
        let n1 = Double(runs[0].threads)
        guard let base = row.values[0], base != 0 else {
            return (row.values.map { _ in .nan }, row.values.map { _ in .nan })
        }
        let ratio = row.values.map { $0.map { $0 / base } ?? .nan }
        let efficiency = zip(ratio, runs).map { r, run in r / (Double(run.threads) / n1) }
        return (ratio, efficiency)
    }

    func table() -> String {
        let first = runs[0].threads
        var header = ["figure"] + runs.map { "threads=\($0.threads)" }
        header += runs.dropFirst().map { "\($0.threads)/\(first)" }
        var body: [[String]] = []
        for row in rows {
            let (ratio, efficiency) = ratios(row)
            let unit = row.unit.isEmpty ? "" : " (\(row.unit))"
            body.append([row.label + unit] + row.values.map { $0.map(Scaling.show) ?? "-" }
                + ratio.dropFirst().map(Scaling.show))
            if row.kind == .rate {
                body.append(["  scaling efficiency: rate(N) / (N/\(first) x rate(\(first)))"] + efficiency.map(Scaling.show)
                    + efficiency.dropFirst().map { _ in "" })
            }
        }
        var widths = header.map(\.count)
        for line in body { for (i, cell) in line.enumerated() { widths[i] = max(widths[i], cell.count) } }
        func render(_ cells: [String]) -> String {
            "  " + cells.enumerated().map { i, c in
                i == 0 ? c + String(repeating: " ", count: widths[0] - c.count)
                    : String(repeating: " ", count: widths[i] - c.count) + c
            }.joined(separator: "  ")
        }
        var lines = ["== Scaling: the same run at each loop thread count, side by side [scaling]", render(header)]
        lines += body.map(render)
        lines.append("  note: each column is a whole run with a fresh relay started with --threads N, one after the other; the ratio columns divide by the first count's figure")
        lines.append("  note: cores used = relay CPU seconds (user+system) / wall seconds of that measurement")
        let unreported = runs.filter { run in
            run.threads > 1 && (run.report.sections.first { $0.key == "relay" }?.value("threads_reported") ?? 1) < Double(run.threads)
        }
        if !unreported.isEmpty {
            lines.append("  note: the relay reported fewer loop threads than asked at --threads \(unreported.map { String($0.threads) }.joined(separator: ",")) (relay_threads absent or lower): its core does not run them yet")
        }
        lines.append("  note: max / mean over loop threads of the per-thread counters' deltas (1 = even); a relay without per-thread metrics counts as one thread")
        lines.append("  note: the bench (terminals, the device thread, the senders) shares this machine with the relay: \(runs[0].report.machine.first { $0.0 == "nproc" }?.1 ?? "?") CPUs in all")
        return lines.joined(separator: "\n") + "\n"
    }

    static func show(_ v: Double) -> String {
        Figure(key: "", label: "", value: .double(v), unit: "").display
    }

    /// The first run's report as the top level (its `phases`, as a single run writes them),
    /// every run under `runs`, and the comparison under `scaling`.
    func json() throws -> Data {
        func decode(_ r: Report) throws -> [String: Any] {
            (try JSONSerialization.jsonObject(with: try r.json()) as? [String: Any]) ?? [:]
        }
        var root = try decode(runs[0].report)
        root["threads"] = runs.map(\.threads)
        root["runs"] = try runs.map { run -> [String: Any] in
            ["threads": run.threads, "phases": try decode(run.report)["phases"] ?? [:]]
        }
        root["scaling"] = rows.map { row -> [String: Any] in
            let (ratio, efficiency) = ratios(row)
            func clean(_ v: Double?) -> Any { v.map { $0.isFinite ? $0 as Any : NSNull() } ?? NSNull() }
            var out: [String: Any] = [
                "key": row.key, "label": row.label, "unit": row.unit,
                "values": row.values.map(clean), "ratio_to_first": ratio.map(clean),
            ]
            if row.kind == .rate { out["efficiency"] = efficiency.map(clean) }
            return out
        }
        return try JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])
    }
}
