import Foundation

/// One reported figure: a JSON key (its unit in the name), a label for the table, a value.
struct Figure {
    enum Value {
        case int(Int64)
        case double(Double)
        case text(String)
    }
    let key: String
    let label: String
    let value: Value
    let unit: String

    var json: Any {
        switch value {
        case .int(let v): return v
        case .double(let v): return v.isFinite ? v : NSNull()
        case .text(let v): return v
        }
    }

    var display: String {
        switch value {
        case .int(let v): return Report.grouped(v)
        case .double(let v):
            if !v.isFinite { return "n/a" }
            if abs(v) >= 1000 || (v == v.rounded() && abs(v) < 1e15) { return Report.grouped(Int64(v.rounded())) }
            if abs(v) >= 100 { return String(format: "%.1f", v) }
            if abs(v) >= 1 { return String(format: "%.2f", v) }
            return String(format: "%.3f", v)
        case .text(let v): return v
        }
    }
}

/// A phase's figures, notes, or the reason it was skipped.
final class Section {
    let key: String
    let title: String
    private(set) var figures: [Figure] = []
    private(set) var notes: [String] = []
    var skipped: String?

    init(key: String, title: String) {
        self.key = key
        self.title = title
    }

    func add(_ key: String, _ label: String, _ value: Int64, _ unit: String = "") {
        figures.append(Figure(key: key, label: label, value: .int(value), unit: unit))
    }
    func add(_ key: String, _ label: String, _ value: UInt64, _ unit: String = "") {
        figures.append(Figure(key: key, label: label, value: .int(Int64(clamping: value)), unit: unit))
    }
    func add(_ key: String, _ label: String, _ value: Int, _ unit: String = "") {
        figures.append(Figure(key: key, label: label, value: .int(Int64(value)), unit: unit))
    }
    func add(_ key: String, _ label: String, _ value: Double, _ unit: String = "") {
        figures.append(Figure(key: key, label: label, value: .double(value), unit: unit))
    }
    func add(_ key: String, _ label: String, text: String) {
        figures.append(Figure(key: key, label: label, value: .text(text), unit: ""))
    }
    func note(_ text: String) { notes.append(text) }
    /// A figure added earlier, as a number.
    func value(_ key: String) -> Double? {
        guard let f = figures.last(where: { $0.key == key }) else { return nil }
        switch f.value {
        case .int(let v): return Double(v)
        case .double(let v): return v
        case .text: return nil
        }
    }

    var json: [String: Any] {
        var out: [String: Any] = ["title": title]
        var values: [String: Any] = [:]
        var units: [String: Any] = [:]
        for f in figures {
            values[f.key] = f.json
            if !f.unit.isEmpty { units[f.key] = f.unit }
        }
        out["figures"] = values
        out["units"] = units
        out["notes"] = notes
        out["skipped"] = skipped ?? NSNull()
        return out
    }
}

/// Everything one run measured: machine, command, configuration and each phase.
final class Report {
    var command: String = ""
    var machine: [(String, String)] = []
    var config: [(String, String)] = []
    var sections: [Section] = []

    func section(_ key: String, _ title: String) -> Section {
        let s = Section(key: key, title: title)
        sections.append(s)
        return s
    }

    static func grouped(_ v: Int64) -> String {
        let digits = String(v.magnitude)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (v < 0 ? "-" : "") + out
    }

    /// Sections in the issue's order, whatever order the phases ran in.
    var ordered: [Section] {
        let order = ["setup", "registration", "steady", "memory", "wakes", "datapath", "relay"]
        return sections.sorted { (order.firstIndex(of: $0.key) ?? 99) < (order.firstIndex(of: $1.key) ?? 99) }
    }

    /// The readable table printed on stdout.
    func table() -> String {
        var lines: [String] = []
        lines.append("relay-bench results")
        lines.append("command: \(command)")
        for (k, v) in machine { lines.append("machine.\(k): \(v)") }
        for (k, v) in config { lines.append("config.\(k): \(v)") }
        for s in ordered {
            lines.append("")
            lines.append("== \(s.title) [\(s.key)]")
            if let reason = s.skipped {
                lines.append("  skipped: \(reason)")
            }
            let width = max(s.figures.map { $0.label.count }.max() ?? 0, 10)
            for f in s.figures {
                let pad = String(repeating: " ", count: width - f.label.count)
                lines.append("  \(f.label)\(pad)  \(f.display)\(f.unit.isEmpty ? "" : " " + f.unit)")
            }
            for n in s.notes { lines.append("  note: \(n)") }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    func json() throws -> Data {
        var phases: [String: Any] = [:]
        for s in sections { phases[s.key] = s.json }
        let root: [String: Any] = [
            "command": command,
            "machine": Dictionary(uniqueKeysWithValues: machine),
            "config": Dictionary(uniqueKeysWithValues: config),
            "phases": phases,
        ]
        return try JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])
    }
}
