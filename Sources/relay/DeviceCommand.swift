import ArgumentParser
import Foundation
import RelayControl

/// `relay device add|list|show|remove|wait`: provisioning in the store a running relay syncs
/// from. With a running relay on the same --data (its `<data>/admin.json`), changes are pushed
/// to it at once through its admin API and list/show add the live columns.
struct DeviceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "device",
        abstract: "Add, list, show or remove devices (a running relay applies changes at once).",
        subcommands: [Add.self, List.self, Show.self, Remove.self, Wait.self]
    )

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Provision a device and print its secret (shown once; give it to `relay agent --key`).")

        @Argument(help: "Device ID: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'.")
        var id: String

        @OptionGroup var data: DataOptions

        func run() throws {
            let store = try data.open()
            let secret = try store.add(id: id)
            print(Hex.encode(secret))
            LiveRelay.syncNow(data.resolved)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List devices. With a running relay: ID, STATUS, LAST SEEN, ADDRESS, CREATED columns; without: ID, a tab, and when it was added (ISO 8601).")

        @Flag(help: "One JSON array of device objects (the admin API's shape), for scripts.")
        var json = false

        @Option(help: ArgumentHelp("Only online (true) or offline (false) devices; needs a running relay.", valueName: "bool"))
        var online: Bool?

        @OptionGroup var data: DataOptions

        func run() throws {
            let store = try data.open(createIfMissing: false)
            if let client = AdminClient(dataDirectory: data.resolved), let devices = try? LiveRelay.allDevices(client, online: online) {
                if json {
                    LiveRelay.printJSON(devices)
                } else {
                    LiveRelay.printTable(devices)
                }
                return
            }
            if online != nil { throw ValidationError("--online needs a running relay (none answers on \(data.resolved)/admin.json)") }
            let formatter = ISO8601DateFormatter()
            let devices = try store.list()
            if json {
                LiveRelay.printJSON(devices.map { ["id": $0.id, "created": formatter.string(from: $0.createdAt), "online": NSNull()] })
                return
            }
            for device in devices {
                print("\(device.id)\t\(formatter.string(from: device.createdAt))")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one device: with a running relay its live state, address history, last wakes, sessions and tokens.")

        @Argument(help: "Device ID.")
        var id: String

        @Flag(help: "The admin API's JSON object.")
        var json = false

        @OptionGroup var data: DataOptions

        func run() throws {
            let store = try data.open(createIfMissing: false)
            if let client = AdminClient(dataDirectory: data.resolved),
                let reply = try? client.request("GET", "/api/v1/devices/\(id)"), reply.status == 200 || reply.status == 404
            {
                guard reply.status == 200, let device = reply.json() as? [String: Any] else {
                    throw DeviceStoreError.noSuchDevice(id)
                }
                if json { LiveRelay.printJSON(device) } else { LiveRelay.printDetail(device) }
                return
            }
            guard let device = try store.device(id) else { throw DeviceStoreError.noSuchDevice(id) }
            let created = ISO8601DateFormatter().string(from: device.createdAt)
            let tokens = try store.tokens(device: id)
            if json {
                LiveRelay.printJSON(["id": id, "created": created, "online": NSNull(), "tokens": tokens.count])
                return
            }
            print("id:       \(id)")
            print("created:  \(created)")
            print("tokens:   \(tokens.count) unexpired")
            print("status:   unknown (no running relay answers on this --data)")
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Deprovision a device; its tokens and secret stop working.")

        @Argument(help: "Device ID.")
        var id: String

        @OptionGroup var data: DataOptions

        func run() throws {
            let store = try data.open(createIfMissing: false)
            try store.remove(id: id)
            LiveRelay.syncNow(data.resolved)
        }
    }

    struct Wait: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Wait until a running relay sees the device online (its agent notified); exit 1 at the timeout.")

        @Argument(help: "Device ID.")
        var id: String

        @Option(help: ArgumentHelp("How long to wait. (default: 30s)", valueName: "duration"), transform: parseDuration)
        var timeout: Duration = .seconds(30)

        @OptionGroup var data: DataOptions

        func run() throws {
            let end = ContinuousClock.now + timeout
            while true {
                if let client = AdminClient(dataDirectory: data.resolved),
                    let reply = try? client.request("GET", "/api/v1/devices/\(id)", timeout: 2)
                {
                    if reply.status == 404 { throw DeviceStoreError.noSuchDevice(id) }
                    if let device = reply.json() as? [String: Any], device["online"] as? Bool == true { return }
                }
                if ContinuousClock.now >= end {
                    FileHandle.standardError.write(Data("Error: device \(id) is not online after \(timeout)\n".utf8))
                    throw ExitCode(1)
                }
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
    }
}

/// The CLI's use of a running relay's admin API.
enum LiveRelay {
    /// Asks a running relay on `dataDirectory` to apply the store's changes now (a device added,
    /// removed, a token revoked), so that they are in effect when the command returns. Without
    /// a relay (or when it does not answer within 3 s) its 500 ms poll picks them up.
    static func syncNow(_ dataDirectory: String) {
        guard let client = AdminClient(dataDirectory: dataDirectory) else { return }
        _ = try? client.request("POST", "/api/v1/sync", timeout: 3)
    }

    static func allDevices(_ client: AdminClient, online: Bool?) throws -> [[String: Any]] {
        var devices: [[String: Any]] = []
        var after: String? = nil
        for _ in 0..<100_000 {  // bounded: 1000 per page
            var path = "/api/v1/devices?limit=1000"
            if let online { path += "&online=\(online)" }
            if let after { path += "&after=\(after.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? after)" }
            let reply = try client.request("GET", path, timeout: 10)
            guard reply.status == 200, let page = reply.json() as? [String: Any],
                let items = page["devices"] as? [[String: Any]]
            else { throw AdminClient.Unreachable(description: "admin API answered \(reply.status)") }
            devices += items
            guard let next = page["next"] as? String else { break }
            after = next
        }
        return devices
    }

    static func printJSON(_ object: Any) {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])) ?? Data()
        print(String(decoding: data, as: UTF8.self))
    }

    static func age(_ value: Any?) -> String {
        guard let seconds = value as? Int else { return "never" }
        if seconds < 120 { return "\(seconds)s ago" }
        if seconds < 7200 { return "\(seconds / 60)m ago" }
        if seconds < 172_800 { return "\(seconds / 3600)h ago" }
        return "\(seconds / 86400)d ago"
    }

    static func printTable(_ devices: [[String: Any]]) {
        let header = ["ID", "STATUS", "LAST SEEN", "ADDRESS", "CREATED"]
        let rows = devices.map { d -> [String] in
            [
                d["id"] as? String ?? "?", (d["online"] as? Bool) == true ? "online" : "offline",
                age(d["last_notify_a_age_s"]), d["address"] as? String ?? "-", d["created"] as? String ?? "",
            ]
        }
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
        print(line(header))
        for row in rows { print(line(row)) }
    }

    static func printDetail(_ d: [String: Any]) {
        func field(_ name: String, _ value: String) { print(name.padding(toLength: 17, withPad: " ", startingAt: 0) + value) }
        field("id:", d["id"] as? String ?? "?")
        field("status:", (d["online"] as? Bool) == true ? "online" : "offline")
        if let why = d["offline_reason"] as? String { field("why:", why) }
        field("last seen:", age(d["last_notify_a_age_s"]))
        field("address:", d["address"] as? String ?? "-")
        field("address changes:", "\(d["address_changes"] ?? 0)")
        field("sessions:", "\(d["sessions"] ?? 0)")
        if let wake = d["last_wake"] as? [String: Any] {
            field("last wake:", "\(wake["at"] ?? "") \(wake["outcome"] ?? "") \(wake["latency_ms"] ?? "") ms")
        } else {
            field("last wake:", "none recorded")
        }
        field("created:", d["created"] as? String ?? "")
        for a in d["address_history"] as? [[String: Any]] ?? [] {
            field("moved:", "\(a["at"] ?? "") to \(a["address"] ?? "")")
        }
        for w in d["wakes"] as? [[String: Any]] ?? [] {
            field("wake:", "\(w["at"] ?? "") \(w["outcome"] ?? "") \(w["latency_ms"] ?? "") ms")
        }
        for s in d["session_list"] as? [[String: Any]] ?? [] {
            field("session:", "\(s["id"] ?? "") \(s["state"] ?? "") \(s["age_ms"] ?? 0) ms")
        }
        field("tokens:", "\((d["tokens"] as? [Any])?.count ?? 0) unexpired")
    }
}
