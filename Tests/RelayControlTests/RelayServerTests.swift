import CRelayCore
import Foundation
import Logging
import XCTest

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@testable import RelayControl

/// The real core on loopback port 0: bind, serve, sync devices, and a clean shutdown.
final class RelayServerTests: XCTestCase {
    private let logger = Logger(label: "relay.tests") { _ in SwiftLogNoOpLogHandler() }

    private func loopbackConfiguration() throws -> RelayConfiguration {
        var configuration = RelayConfiguration(environment: [:])
        configuration.dataDirectory = try makeTemporaryDirectory(self) + "/data"
        configuration.http = ["127.0.0.1:0"]
        configuration.udp = ["127.0.0.1:0"]
        configuration.tcp = ["127.0.0.1:0"]
        configuration.metrics = ["127.0.0.1:0"]
        configuration.capacity = 1024
        return configuration
    }

    /// Polls `condition` for up to `seconds`: a bound for a broken build, not a timing check.
    private func eventually(_ seconds: Double = 10, _ condition: () -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return condition()
    }

    func testBindsPortZeroAndReportsTheRealPorts() throws {
        let server = try RelayServer.make(configuration: try loopbackConfiguration(), logger: logger)
        XCTAssertTrue(server.listeners.addresses(.https).isEmpty, "no HTTPS without a certificate")
        for kind in ListenerKind.allCases where kind != .https {
            let addresses = server.listeners.addresses(kind)
            XCTAssertEqual(addresses.count, 1, "\(kind)")
            XCTAssertEqual(addresses.first?.host, "127.0.0.1")
            XCTAssertNotEqual(addresses.first?.port, 0, "\(kind)")
        }
        let line = server.readyLine()
        let pattern = #"^relay\.ready http=127\.0\.0\.1:\d+ udp=127\.0\.0\.1:\d+ tcp=127\.0\.0\.1:\d+ metrics=127\.0\.0\.1:\d+ data=.+/data$"#
        XCTAssertNotNil(line.range(of: pattern, options: .regularExpression), line)
        XCTAssertTrue(line.contains("http=\(server.listeners.joined(.http)) "))
    }

    func testServesSyncsDevicesAndShutsDownCleanly() async throws {
        let configuration = try loopbackConfiguration()
        let preloaded = try DeviceStore(directory: configuration.dataDirectory)
        _ = try preloaded.add(id: "before-start")

        let server = try RelayServer.make(configuration: configuration, logger: logger)
        XCTAssertEqual(server.core.stats().devices, 1, "devices in the store are loaded before start")
        let running = Task { try await server.run() }

        // /healthz answers 200 once ready (503 until run() has marked it so).
        let http = server.listeners.addresses(.http)[0]
        var status: Int?
        for _ in 0..<100 {
            let health = try await URLSession.shared.data(from: URL(string: "http://\(http)/healthz")!)
            status = (health.1 as? HTTPURLResponse)?.statusCode
            if status == 200 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTAssertEqual(status, 200)

        // Another process's store (the CLI) adds and removes; the running core follows.
        let cli = try DeviceStore(directory: configuration.dataDirectory, createIfMissing: false)
        _ = try cli.add(id: "cam-1")
        let added = await eventually { server.core.stats().devices == 2 }
        XCTAssertTrue(added, "added device reaches the core")
        try cli.remove(id: "cam-1")
        try cli.remove(id: "before-start")
        let removed = await eventually { server.core.stats().devices == 0 }
        XCTAssertTrue(removed, "removed devices leave the core")

        await server.shutdown()
        try await running.value
    }

    func testRevokedTokensAreRefusedFromTheStartAndOnceRevokedWhileRunning() async throws {
        let configuration = try loopbackConfiguration()
        let store = try DeviceStore(directory: configuration.dataDirectory)
        _ = try store.add(id: "cam-1")
        let early = try store.mintToken(id: "cam-1", ttl: .seconds(3600))
        let late = try store.mintToken(id: "cam-1", ttl: .seconds(3600))
        try store.revokeTokens([early])

        let server = try RelayServer.make(configuration: configuration, logger: logger)
        let running = Task { try await server.run() }
        let http = server.listeners.addresses(.http)[0]
        func answer(_ token: String) async throws -> (status: Int, body: String) {
            var request = URLRequest(url: URL(string: "http://\(http)/d/cam-1/")!)
            request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
            let (body, response) = try await URLSession.shared.data(for: request)
            return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: body, as: UTF8.self))
        }

        let refused = try await answer(early)
        XCTAssertEqual(refused.status, 401)
        XCTAssertEqual(refused.body, "token revoked\n")
        let accepted = try await answer(late)
        XCTAssertEqual(accepted.status, 503, "accepted; the device has not notified")

        try store.revokeTokens([late])
        var status = 0
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            status = try await answer(late).status
            if status == 401 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTAssertEqual(status, 401, "a revocation reaches the running core")

        await server.shutdown()
        try await running.value
    }

    func testAnExplicitAddressThatCannotBeBoundIsFatalAndNamed() throws {
        var first = try loopbackConfiguration()
        first.metrics = []
        let holder = try RelayServer.make(configuration: first, logger: logger)
        let taken = holder.listeners.addresses(.http)[0].description

        var second = try loopbackConfiguration()
        second.http = [taken]
        XCTAssertThrowsError(try RelayServer.make(configuration: second, logger: logger)) { error in
            XCTAssertTrue("\(error)".hasPrefix("--http \(taken):"), "\(error)")
        }
    }

    func testInvalidConfigurationFailsBeforeAnythingIsOpened() throws {
        var configuration = try loopbackConfiguration()
        configuration.keepalive = configuration.period
        XCTAssertThrowsError(try RelayServer.make(configuration: configuration, logger: logger)) { error in
            XCTAssertEqual((error as? ConfigurationError)?.flag, "--keepalive")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: configuration.dataDirectory))
    }
}
