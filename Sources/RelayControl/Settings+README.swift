/// The README's table of `relay serve` options, made from ``RelayConfiguration/settingsTable``
/// (`relay check-config --print-settings-table`; scripts/settings-table.sh puts it in
/// README.md, and a unit test fails when the two differ).
extension RelayConfiguration {
    public static func settingsMarkdown() -> String {
        var lines = ["| `serve` option | default | on SIGHUP | meaning |", "| --- | --- | --- | --- |"]
        for setting in settingsTable {
            let cells = [
                "`\(setting.flag)`", markdownDefault(setting), markdownReload(setting.reload), markdownText(setting.help),
            ]
            lines.append("| " + cells.joined(separator: " | ") + " |")
        }
        lines.append(
            "| `--config` | none | re-read | A YAML file with any of the keys above "
                + "([packaging/relay.yaml](packaging/relay.yaml)); `RELAY_<KEY>` variables override it |")
        return lines.joined(separator: "\n") + "\n"
    }

    private static func markdownDefault(_ setting: Setting) -> String {
        if let note = setting.defaultNote { return markdownText(note) }
        let values = setting.items(RelayConfiguration(environment: [:])).filter { !$0.isEmpty }
        return values.isEmpty ? "none" : values.map { "`\($0)`" }.joined(separator: ", ")
    }

    private static func markdownReload(_ reload: Setting.Reload) -> String {
        switch reload {
        case .live: return "applied"
        case .certificates: return "reloaded (with TLS)"
        case .restart: return "restart"
        }
    }

    /// Plain text in a table cell: no HTML, no column breaks.
    private static func markdownText(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "|", with: "\\|")
    }
}
