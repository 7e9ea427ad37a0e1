import Foundation

/// PIDs of every child still running, for the SIGINT/SIGTERM handler (plain C memory: the
/// handler may not touch Swift objects).
nonisolated(unsafe) let childSlots = UnsafeMutablePointer<Int32>.allocate(capacity: 64)

enum ChildRegistry {
    static func install() {
        childSlots.initialize(repeating: 0, count: 64)
        for sig in [SIGINT, SIGTERM] {
            signal(sig) { s in
                for i in 0..<64 where childSlots[i] > 0 { kill(childSlots[i], SIGTERM) }
                _exit(128 + s)
            }
        }
    }
    static func add(_ pid: Int32) {
        for i in 0..<64 where childSlots[i] == 0 {
            childSlots[i] = pid
            return
        }
    }
    static func remove(_ pid: Int32) {
        for i in 0..<64 where childSlots[i] == pid { childSlots[i] = 0 }
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// A child process whose output goes to a log file, stopped with SIGTERM (then SIGKILL).
final class Child {
    let name: String
    let process = Process()
    let logPath: String

    init(name: String, executable: String, arguments: [String], logPath: String, environment: [String: String]? = nil) throws {
        self.name = name
        self.logPath = logPath
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        if let environment { process.environment = environment }
        try process.run()
        ChildRegistry.add(process.processIdentifier)
    }

    var pid: Int32 { process.processIdentifier }
    var running: Bool { process.isRunning }
    var log: String { SystemInfo.read(logPath) }

    /// Waits until the log has a line containing `marker`; returns that line.
    func waitForLine(containing marker: String, timeout: Double) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let line = log.split(separator: "\n").first(where: { $0.contains(marker) }) { return String(line) }
            if !running { throw BenchError("\(name) exited (status \(process.terminationStatus)): \(log.suffix(800))") }
            usleep(20_000)
        }
        throw BenchError("\(name) printed no '\(marker)' within \(Int(timeout)) s: \(log.suffix(800))")
    }

    /// SIGTERM, up to `grace` seconds, then SIGKILL. Returns the exit status.
    @discardableResult
    func stop(grace: Double = 10) -> Int32 {
        defer { ChildRegistry.remove(pid) }
        guard running else { return process.terminationStatus }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while running && Date() < deadline { usleep(10_000) }
        if running {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
        return process.terminationStatus
    }
}

/// A `relay serve` child on loopback with every port chosen by the kernel.
final class RelayChild {
    let child: Child
    let http: UInt16, udp: UInt16, tcp: UInt16, metrics: UInt16

    init(binary: String, data: String, capacity: Int, period: Int, keepalive: Int, threads: Int, logPath: String) throws {
        child = try Child(
            name: "relay serve", executable: binary,
            arguments: [
                "serve", "--data", data,
                "--http", "127.0.0.1:0", "--udp", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
                "--period", "\(period)", "--keepalive", "\(keepalive)", "--capacity", "\(capacity)",
                "--log-level", "warning", "--threads", "\(threads)",
                // One process simulates every terminal from one address: the per-source and
                // per-device abuse limits would measure themselves, not the relay.
                "--max-conns-per-source", "0", "--conn-rate-per-source", "0",
                "--max-sessions-per-device", "0", "--wakes-per-device-minute", "0",
            ],
            logPath: logPath)
        let line: String
        do {
            line = try child.waitForLine(containing: "relay.ready", timeout: 300)
        } catch {
            child.stop()
            throw error
        }
        func port(_ key: String) -> UInt16 {
            // "relay.ready http=127.0.0.1:41234 udp=... tcp=... metrics=... data=..."
            guard let field = line.split(separator: " ").first(where: { $0.hasPrefix("\(key)=") }),
                let colon = field.lastIndex(of: ":"),
                let p = UInt16(field[field.index(after: colon)...].prefix { $0.isNumber })
            else { return 0 }
            return p
        }
        http = port("http")
        udp = port("udp")
        tcp = port("tcp")
        metrics = port("metrics")
        guard http != 0, udp != 0, tcp != 0, metrics != 0 else {
            child.stop()
            throw BenchError("cannot read the relay's ports from: \(line)")
        }
    }

    var pid: Int32 { child.pid }
    func scrape() -> Metrics? { Metrics.scrape(port: metrics) }

    /// Polls /metrics until `done` holds or `timeout` passes; returns the last scrape.
    func waitMetrics(timeout: Double, interval: Double = 0.05, _ done: (Metrics) -> Bool) -> Metrics? {
        let deadline = Date().addingTimeInterval(timeout)
        var last: Metrics?
        repeat {
            if let m = scrape() {
                last = m
                if done(m) { return m }
            }
            usleep(UInt32(interval * 1e6))
        } while Date() < deadline && child.running
        return last
    }
}
