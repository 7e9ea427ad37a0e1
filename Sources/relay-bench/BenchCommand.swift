import ArgumentParser
import CBench
import Foundation
import RelayControl

/// `relay-bench`: one relay, a million simulated devices, every figure next to a baseline
/// measured in the same run. See bench/README.md for what each figure means.
@main
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay-bench",
        abstract: "Benchmark the relay with simulated devices, side by side with baselines.",
        discussion: """
            Starts `relay serve` (found next to this binary, built if missing) on loopback with a \
            temporary store, provisions the devices straight into it, simulates them speaking the \
            real protocol, and prints every figure with the machine and the command. \
            Phases: \(Phase.allCases.map(\.rawValue).joined(separator: ", ")).
            """
    )

    enum Phase: String, CaseIterable {
        case registration, steady, memory, wakes, datapath
    }

    @Option(help: "Simulated devices (registered and kept alive).")
    var devices: Int = 1_000_000

    @Option(help: "Seconds for each timed measurement (steady-state runs; wake levels and data-path runs use a share of it).")
    var duration: Double = 10

    @Option(help: "Terminal concurrency levels for wakes, comma-separated.")
    var concurrency: String = "1,8,32"

    @Option(help: "Phases to run, comma-separated (default: all).")
    var phases: String = Phase.allCases.map(\.rawValue).joined(separator: ",")

    @Option(help: "Write the results as JSON to this file.")
    var json: String?

    @Option(help: "UDP sockets (each on its own 127.10.x.y address) the devices share.")
    var sockets: Int = 1024

    @Option(help: "Max access period told to the relay (seconds).")
    var period: Int = 300

    @Option(help: "NAT keepalive (notify B interval) told to the relay (seconds).")
    var keepalive: Int = 25

    @Option(help: ArgumentHelp(
        "Loop thread counts, comma-separated: the whole run (a fresh relay started with --threads N) for each, "
            + "then every figure side by side with its ratio to the first.", valueName: "list"))
    var threads: String = "1"

    @Option(help: "Sender threads for the steady-state blast (each sends the datagrams of its own sockets).")
    var senders: Int = 1

    func validate() throws {
        guard devices >= 1, devices <= 9_000_000 else {
            throw ValidationError("--devices must be between 1 and 9,000,000")
        }
        guard duration >= 1, duration <= 600 else { throw ValidationError("--duration must be 1...600 seconds") }
        guard !levels.isEmpty, levels.allSatisfy({ $0 >= 1 && $0 <= 1024 }) else {
            throw ValidationError("--concurrency must be a comma list of 1...1024, e.g. 1,8,32")
        }
        for p in phases.split(separator: ",") where Phase(rawValue: p.trimmingCharacters(in: .whitespaces)) == nil {
            throw ValidationError("unknown phase '\(p)'; phases are \(Phase.allCases.map(\.rawValue).joined(separator: ","))")
        }
        guard sockets >= 1, sockets <= 16000 else { throw ValidationError("--sockets must be 1...16000") }
        guard period >= 2, keepalive >= 1 else { throw ValidationError("--period >= 2 and --keepalive >= 1") }
        let items = threads.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        for item in items where Int(item).map({ !(1...64).contains($0) }) ?? true {
            throw ValidationError("--threads: '\(item)' is not a loop thread count from 1 to 64 (give a comma list, e.g. 1,2,4)")
        }
        guard Set(threadCounts).count == threadCounts.count else {
            throw ValidationError("--threads: each count once (got \(threads))")
        }
        guard senders >= 1, senders <= Int(RB_MAX_SENDERS) else {
            throw ValidationError("--senders must be 1...\(RB_MAX_SENDERS)")
        }
    }

    var threadCounts: [Int] { threads.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    var levels: [Int] { concurrency.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }
    var selected: Set<Phase> {
        Set(phases.split(separator: ",").compactMap { Phase(rawValue: $0.trimmingCharacters(in: .whitespaces)) })
    }

    func run() throws {
        ChildRegistry.install()
        // A terminal that leaves mid-response makes the relay close that device link while the
        // simulated web device is still writing: EPIPE for that link, not the end of the bench.
        signal(SIGPIPE, SIG_IGN)
        SystemInfo.raiseFileLimit()
        let command = CommandLine.arguments.map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " ")
        let machine = SystemInfo.machine
        // One whole run per thread count, one after the other: each its own store, relay and
        // simulated devices, so no run inherits another's state.
        var runs: [(threads: Int, report: Report)] = []
        for n in threadCounts {
            let report = Report()
            report.command = command
            report.machine = machine
            let bench = try Bench(options: self, report: report, threads: n)
            defer { bench.cleanup() }
            if threadCounts.count > 1 { bench.log("run at --threads \(n) (\(runs.count + 1) of \(threadCounts.count))") }
            try bench.run()
            bench.cleanup()
            runs.append((n, report))
        }
        if runs.count == 1 {
            print(runs[0].report.table(), terminator: "")
        } else {
            for run in runs {
                print("=== loop threads: \(run.threads)")
                print(run.report.table())
            }
            print(Scaling(runs: runs).table(), terminator: "")
        }
        if let json {
            let data = runs.count == 1 ? try runs[0].report.json() : try Scaling(runs: runs).json()
            try data.write(to: URL(fileURLWithPath: json))
            print("json: \(json)")
        }
    }
}

/// One run: the temp directory, the relay child, the simulator and the phases in order.
final class Bench {
    let o: BenchCommand
    let report: Report
    let tmp: String
    let relayBinary: String
    var relay: RelayChild?
    var sim: OpaquePointer?
    var children: [Child] = []
    let offline: Int
    /// The relay's --threads in this run.
    let threads: Int
    var total: Int { o.devices + offline }
    var capacity: Int { total + 1 }
    var bPerA: UInt32 { UInt32(max(1, (o.period / 2) / max(1, o.keepalive))) }
    /// Notifies/s the devices send at the protocol's intervals: NOTIFY_A every period/2,
    /// NOTIFY_B every keepalive.
    var realisticRate: Double { Double(o.devices) * (2.0 / Double(o.period) + 1.0 / Double(o.keepalive)) }

    init(options: BenchCommand, report: Report, threads: Int) throws {
        o = options
        self.report = report
        self.threads = threads
        offline = min(1000, max(10, options.devices / 100))
        let tmpRoot = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(tmpRoot)/relay-bench-XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else { throw BenchError("cannot make a temp directory") }
        tmp = String(decoding: UnsafeRawBufferPointer(start: dir, count: strlen(dir)), as: UTF8.self)
        relayBinary = try Bench.findRelay()
        report.config = [
            ("devices", "\(o.devices)"), ("offline_devices", "\(offline)"), ("sockets", "\(o.sockets)"),
            ("duration_s", "\(o.duration)"), ("concurrency", o.concurrency), ("phases", o.phases),
            ("period_s", "\(o.period)"), ("keepalive_s", "\(o.keepalive)"), ("threads", "\(threads)"),
            ("senders", "\(o.senders)"), ("relay", relayBinary),
            ("temp_dir", tmp),
        ]
    }

    /// `relay` next to this binary; built with the same scratch path and configuration when missing.
    static func findRelay() throws -> String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let binDir = (exe as NSString).deletingLastPathComponent
        let relay = (binDir as NSString).appendingPathComponent("relay")
        if FileManager.default.isExecutableFile(atPath: relay) { return relay }
        let config = (binDir as NSString).lastPathComponent == "debug" ? "debug" : "release"
        let scratch = ((binDir as NSString).deletingLastPathComponent as NSString).deletingLastPathComponent
        let root = FileManager.default.fileExists(atPath: "Package.swift")
            ? FileManager.default.currentDirectoryPath : (scratch as NSString).deletingLastPathComponent
        guard let swift = SystemInfo.which("swift") else { throw BenchError("\(relay) is missing and swift is not on PATH") }
        let args = ["build", "-c", config, "--product", "relay", "--scratch-path", scratch]
        print("relay-bench: \(relay) is missing; building it: (cd \(root) && swift \(args.joined(separator: " ")))")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: swift)
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: root)
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0, FileManager.default.isExecutableFile(atPath: relay) else {
            throw BenchError("building relay failed (status \(p.terminationStatus)); run the command above by hand")
        }
        return relay
    }

    func log(_ s: String) {
        FileHandle.standardError.write(("relay-bench: " + s + "\n").data(using: .utf8)!)
    }

    func cleanup() {
        if let sim {
            rb_load_stop(sim)
            rb_sim_free(sim)
            self.sim = nil
        }
        for c in children.reversed() { c.stop() }
        children.removeAll()
        relay?.child.stop()
        relay = nil
        try? FileManager.default.removeItem(atPath: tmp)
    }

    func run() throws {
        let phases = o.selected
        // The data path's web server is a simulated device too.
        let needDevices = !phases.isDisjoint(with: [.registration, .steady, .memory, .wakes, .datapath])

        // Memory with no devices: the same relay and capacity, an empty store.
        var emptyRSS: Int64 = 0
        if phases.contains(.memory) {
            let dir = tmp + "/empty-data"
            let r = try RelayChild(binary: relayBinary, data: dir, capacity: capacity, period: o.period,
                                   keepalive: o.keepalive, threads: threads, logPath: tmp + "/relay-empty.log")
            _ = r.waitMetrics(timeout: 10) { $0.values["relay_devices"] != nil }
            usleep(300_000)
            emptyRSS = SystemInfo.rss(r.pid)
            r.child.stop()
        }

        // Devices: keys derived deterministically, provisioned in bulk, then the relay.
        log("deriving keys for \(total) devices")
        var err = [CChar](repeating: 0, count: 256)
        guard let s = rb_sim_new(UInt32(total), UInt32(needDevices ? o.devices : 0), UInt32(o.sockets), 0, 2, &err, err.count)
        else { throw BenchError("simulator: \(cString(err))") }
        sim = s
        let keys = rb_sim_keys(s)!
        let data = tmp + "/data"
        log("provisioning \(total) devices into the store")
        let t0 = Date()
        let store = try DeviceStore(directory: data)
        let webSecret = Bench.secret(9_999_999)
        let webKey = try RelayCrypto.deviceKey(secret: webSecret)
        try store.bulkAdd(count: total + 1) { i in
            if i == self.total { return ("web-0", webKey) }
            var id = [CChar](repeating: 0, count: 16)
            rb_device_id(UInt32(i), &id)
            return (cString(id), Array(UnsafeBufferPointer(start: keys + i * 16, count: 16)))
        }
        let provisionSeconds = Date().timeIntervalSince(t0)
        let tokenKey = try store.tokenKey()
        tokenKey.withUnsafeBufferPointer { rb_sim_set_token_key(s, $0.baseAddress) }

        log("starting relay serve")
        let t1 = Date()
        let relay = try RelayChild(binary: relayBinary, data: data, capacity: capacity, period: o.period,
                                   keepalive: o.keepalive, threads: threads, logPath: tmp + "/relay.log")
        self.relay = relay
        let readySeconds = Date().timeIntervalSince(t1)
        let loaded = relay.waitMetrics(timeout: 300, interval: 0.1) { $0["relay_devices"] >= Double(self.total + 1) }
        let loadSeconds = Date().timeIntervalSince(t1)
        guard let loaded, loaded["relay_devices"] >= Double(total + 1) else {
            throw BenchError("the relay did not load the \(total + 1) devices in time: \(relay.child.log.suffix(500))")
        }
        let loadedRSS = SystemInfo.rss(relay.pid)
        rb_sim_set_relay_port(s, relay.udp)

        let setup = report.section("setup", "Setup")
        setup.add("keygen_s", "key derivation (2 threads)", rb_sim_keygen_seconds(s), "s")
        setup.add("provision_s", "bulk provisioning into the store", provisionSeconds, "s")
        setup.add("provision_per_s", "provisioning rate", Double(total + 1) / provisionSeconds, "devices/s")
        setup.add("relay_ready_s", "relay start to ready", readySeconds, "s")
        setup.add("relay_loaded_s", "relay start to all devices in the registry", loadSeconds, "s")

        if needDevices {
            try Registration(bench: self, sim: s, relay: relay).run(report: phases.contains(.registration))
        }
        if phases.contains(.memory) {
            Memory(bench: self, relay: relay).run(emptyRSS: emptyRSS, loadedRSS: loadedRSS)
        }
        if needDevices {
            var e = [CChar](repeating: 0, count: 256)
            guard rb_sim_start(s, &e, e.count) == 0 else { throw BenchError("device thread: \(cString(e))") }
        }
        if phases.contains(.steady) { try Steady(bench: self, sim: s, relay: relay).run() }
        if phases.contains(.wakes) { Wakes(bench: self, sim: s, relay: relay).run() }
        if phases.contains(.datapath) {
            DataPath(bench: self, sim: s, relay: relay, store: store, webSecret: webSecret).run()
        }

        let end = report.section("relay", "Relay process at the end")
        let cpuTotal = SystemInfo.cpuSeconds(relay.pid)
        end.add("cpu_total_s", "relay CPU time (user+system), whole run", cpuTotal, "s")
        end.add("cores_whole_run", "cores used, whole run (relay CPU s / wall s since start)",
                cpuTotal / max(0.001, Date().timeIntervalSince(t1)), "cores")
        end.add("rss_end_bytes", "relay RSS at the end", SystemInfo.rss(relay.pid), "bytes")
        if let m = relay.scrape() {
            end.add("threads_asked", "loop threads asked (--threads)", threads, "")
            end.add("threads_reported", "loop threads the relay reports (relay_threads; absent: 1)", m.loopThreads, "")
            if m.values["relay_threads"] == nil && threads > 1 {
                end.note("this relay's /metrics has no relay_threads: a core without loop threads, counted as one")
            }
            end.add("sessions_active", "sessions active", m["relay_sessions_active"], "")
            end.add("datagrams_dropped_total", "relay_datagrams_dropped_total (all reasons)", m.dropped, "")
        }
        if let sim {
            rb_sim_stop(sim)
        }
        let status = relay.child.stop()
        end.add("exit_status", "relay exit status after SIGTERM", Int(status), "")
        if status != 0 { end.note("the relay did not exit cleanly; its log: \(relay.child.log.suffix(400))") }
    }

    static func secret(_ index: UInt32) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        rb_device_secret(index, &out)
        return out
    }
}
