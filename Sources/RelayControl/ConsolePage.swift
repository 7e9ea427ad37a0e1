/// The console page (placeholder).
enum ConsolePage {
    static let html = "<!doctype html><title>relay console</title>"
}
