import CRelayCore
import Foundation
import XCTest

@testable import RelayControl

final class ConfigurationTests: XCTestCase {
    private func defaults() -> RelayConfiguration { RelayConfiguration(environment: [:]) }

    private func assertInvalid(
        _ change: (inout RelayConfiguration) -> Void, flag: String, mentions text: String? = nil,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        var configuration = defaults()
        change(&configuration)
        XCTAssertThrowsError(try configuration.validate(), file: file, line: line) { error in
            let error = error as? ConfigurationError
            XCTAssertEqual(error?.flag, flag, file: file, line: line)
            XCTAssertTrue("\(error!)".hasPrefix(flag), "message names the flag: \(error!)", file: file, line: line)
            if let text { XCTAssertTrue("\(error!)".contains(text), "\(error!)", file: file, line: line) }
        }
    }

    func testDocumentedDefaults() throws {
        let configuration = defaults()
        XCTAssertEqual(configuration.dataDirectory, "./relay-data")
        XCTAssertEqual(configuration.http, ["127.0.0.1:8080", "[::1]:8080"])
        XCTAssertEqual(configuration.udp, ["127.0.0.1:4700", "[::1]:4700"])
        XCTAssertEqual(configuration.tcp, ["127.0.0.1:4701", "[::1]:4701"])
        XCTAssertEqual(configuration.metrics, [])
        XCTAssertEqual(configuration.domain, "localhost")
        XCTAssertEqual(configuration.period, .seconds(300))
        XCTAssertEqual(configuration.keepalive, .seconds(25))
        XCTAssertEqual(configuration.capacity, 1_000_000)
        XCTAssertEqual(configuration.maxSessions, 65536)
        XCTAssertEqual(configuration.wakeTimeout, .seconds(5))
        XCTAssertEqual(configuration.idleLink, .seconds(60))
        XCTAssertEqual(configuration.maxHeaderBytes, 16384)
        XCTAssertEqual(configuration.headerTimeout, .seconds(10))
        XCTAssertEqual(configuration.logLevel, .info)
        XCTAssertEqual(configuration.threads, RelayConfiguration.defaultThreads)
        XCTAssertNoThrow(try configuration.validate())
        for kind in ListenerKind.allCases { XCTAssertTrue(configuration.usesDefaultAddresses(kind)) }
    }

    /// The default is the online CPUs, from 1 up to 16, whatever sysconf says.
    func testThreadsDefault() {
        let online = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        XCTAssertEqual(RelayConfiguration.defaultThreads, min(16, max(1, online)))
        XCTAssertEqual(RelayConfiguration.defaultThreads(onlineCPUs: 1), 1)
        XCTAssertEqual(RelayConfiguration.defaultThreads(onlineCPUs: 2), 2)
        XCTAssertEqual(RelayConfiguration.defaultThreads(onlineCPUs: 16), 16)
        XCTAssertEqual(RelayConfiguration.defaultThreads(onlineCPUs: 96), 16)
        XCTAssertEqual(RelayConfiguration.defaultThreads(onlineCPUs: -1), 1, "sysconf failed")
        XCTAssertEqual(RelayConfiguration.defaultThreads(onlineCPUs: 0), 1)
    }

    private func threads(fromVariable value: String) async throws -> RelayConfiguration {
        let layers = try await ConfigLayers.load(
            file: nil, schema: RelayConfiguration.schema, environmentPrefix: RelayConfiguration.environmentPrefix,
            environment: ["RELAY_THREADS": value])
        let configuration = try RelayConfiguration(layers: layers)
        try configuration.validate()
        return configuration
    }

    func testThreadsFromTheVariableAndTheFile() async throws {
        let four = try await threads(fromVariable: "4")
        XCTAssertEqual(four.threads, 4)
        XCTAssertEqual(four.origins["threads"], "RELAY_THREADS")
        let one = try await threads(fromVariable: " 1 "), most = try await threads(fromVariable: "64")
        XCTAssertEqual(one.threads, 1)
        XCTAssertEqual(most.threads, 64)
        XCTAssertTrue(four.effectiveYAML().contains("threads: 4  # RELAY_THREADS\n"), four.effectiveYAML())

        let file = try makeTemporaryDirectory(self) + "/t.yaml"
        try "threads: 3\n".write(toFile: file, atomically: true, encoding: .utf8)
        let layers = try await ConfigLayers.load(
            file: file, schema: RelayConfiguration.schema, environmentPrefix: RelayConfiguration.environmentPrefix,
            environment: [:])
        XCTAssertEqual(try RelayConfiguration(layers: layers).threads, 3)
    }

    func testThreadsRefusals() async {
        for (value, text) in [
            ("0", "must be from 1 to 64 loop threads"), ("65", "must be from 1 to 64 loop threads"),
            ("-2", "must be from 1 to 64 loop threads"), ("abc", "'abc' is not a whole number"),
            ("2.5", "'2.5' is not a whole number"),
        ] {
            do {
                _ = try await threads(fromVariable: value)
                XCTFail("RELAY_THREADS=\(value) was accepted")
            } catch {
                XCTAssertEqual("\(error)", "threads (from RELAY_THREADS): \(text)", value)
            }
        }
        assertInvalid({ $0.threads = 0 }, flag: "--threads", mentions: "from 1 to 64")
        assertInvalid({ $0.threads = 65 }, flag: "--threads", mentions: "from 1 to 64")
    }

    func testThreadsNeedARestart() {
        var next = defaults()
        next.threads = defaults().threads == 1 ? 2 : 1
        XCTAssertEqual(next.changedKeys(from: defaults()), ["threads"])
        XCTAssertFalse(RelayConfiguration.reloadableKeys.contains("threads"))
        XCTAssertEqual(defaults().reloading(from: next).threads, defaults().threads, "kept until a restart")
    }

    func testDataDirectoryFromEnvironment() {
        XCTAssertEqual(RelayConfiguration(environment: ["RELAY_DATA": "/srv/relay"]).dataDirectory, "/srv/relay")
        XCTAssertEqual(RelayConfiguration(environment: ["RELAY_DATA": ""]).dataDirectory, "./relay-data")
    }

    func testGivenAddressesAreNotTheDefault() {
        var configuration = defaults()
        configuration.http = ["[::1]:8080"]
        XCTAssertFalse(configuration.usesDefaultAddresses(.http))
        XCTAssertTrue(configuration.usesDefaultAddresses(.udp))
    }

    func testKeepaliveFollowsAShortPeriod() throws {
        XCTAssertEqual(RelayConfiguration.defaultKeepalive(period: .seconds(300)), .seconds(25))
        XCTAssertEqual(RelayConfiguration.defaultKeepalive(period: .seconds(40)), .seconds(20))
        XCTAssertEqual(RelayConfiguration.defaultKeepalive(period: .seconds(3)), .seconds(1))
        XCTAssertEqual(RelayConfiguration.defaultKeepalive(period: .seconds(2)), .seconds(1))
        var configuration = defaults()
        configuration.period = .seconds(2)
        configuration.keepalive = RelayConfiguration.defaultKeepalive(period: configuration.period)
        XCTAssertNoThrow(try configuration.validate())
    }

    func testTimerErrorsNameTheFlag() {
        assertInvalid({ $0.keepalive = .seconds(300) }, flag: "--keepalive", mentions: "shorter than --period")
        assertInvalid({ $0.keepalive = .seconds(400) }, flag: "--keepalive")
        assertInvalid({ $0.keepalive = .zero }, flag: "--keepalive")
        assertInvalid({ $0.period = .seconds(1); $0.keepalive = .seconds(1) }, flag: "--period", mentions: "at least 2")
        assertInvalid({ $0.period = .milliseconds(2500) }, flag: "--period", mentions: "whole number")
        assertInvalid({ $0.wakeTimeout = .zero }, flag: "--wake-timeout")
        assertInvalid({ $0.headerTimeout = .zero }, flag: "--header-timeout")
        assertInvalid({ $0.idleLink = .milliseconds(10) }, flag: "--idle-link")
    }

    func testLimitErrorsNameTheFlag() {
        assertInvalid({ $0.capacity = 0 }, flag: "--capacity")
        assertInvalid({ $0.capacity = Int(UInt32.max) + 1 }, flag: "--capacity")
        assertInvalid({ $0.maxSessions = 0 }, flag: "--max-sessions")
        assertInvalid({ $0.maxHeaderBytes = 100 }, flag: "--max-header-bytes")
    }

    func testAddressErrorsNameTheFlagAndValue() {
        assertInvalid({ $0.http = [] }, flag: "--http", mentions: "at least one")
        assertInvalid({ $0.udp = ["localhost"] }, flag: "--udp", mentions: "'localhost'")
        assertInvalid({ $0.tcp = ["::1:4701"] }, flag: "--tcp", mentions: "'::1:4701'")
        assertInvalid({ $0.metrics = ["127.0.0.1:70000"] }, flag: "--metrics")
        assertInvalid({ $0.dataDirectory = "" }, flag: "--data")
    }

    func testDomain() {
        assertInvalid({ $0.domain = "a..b" }, flag: "--domain")
        assertInvalid({ $0.domain = "relay.example.com:8080" }, flag: "--domain")
        assertInvalid({ $0.domain = "-x.example" }, flag: "--domain")
        var configuration = defaults()
        configuration.domain = ""
        XCTAssertNoThrow(try configuration.validate(), "\"\" turns host routing off")
        configuration.domain = "relay.example.com"
        XCTAssertNoThrow(try configuration.validate())
    }

    func testListenAddressParsing() {
        XCTAssertEqual(ListenAddress("127.0.0.1:80")?.description, "127.0.0.1:80")
        XCTAssertEqual(ListenAddress("[::1]:0")?.isIPv6, true)
        XCTAssertEqual(ListenAddress("[::1]:0")?.withPort(4000).description, "[::1]:4000")
        XCTAssertEqual(ListenAddress("0.0.0.0:65535")?.port, 65535)
        for bad in ["", "80", ":80", "host:", "host:65536", "::1:80", "[::1:80", "[]:80", "host:-1"] {
            XCTAssertNil(ListenAddress(bad), bad)
        }
    }

    func testCoreConfigCarriesEveryValue() {
        var configuration = defaults()
        configuration.period = .seconds(60)
        configuration.keepalive = .seconds(20)
        configuration.capacity = 1000
        configuration.maxSessions = 10
        configuration.wakeTimeout = .milliseconds(1500)
        configuration.idleLink = .seconds(7)
        configuration.maxHeaderBytes = 4096
        configuration.headerTimeout = .seconds(3)
        configuration.threads = 5
        let tokenKey = (0..<32).map { UInt8($0) }
        let domain = OwnedCString("example.net")
        let core = configuration.coreConfig(tokenKey: tokenKey, domain: domain.pointer)
        XCTAssertEqual(core.period_s, 60)
        XCTAssertEqual(core.keepalive_s, 20)
        XCTAssertEqual(core.capacity, 1000)
        XCTAssertEqual(core.max_sessions, 10)
        XCTAssertEqual(core.wake_timeout_ms, 1500)
        XCTAssertEqual(core.idle_link_s, 7)
        XCTAssertEqual(core.max_header_bytes, 4096)
        XCTAssertEqual(core.header_timeout_ms, 3000)
        XCTAssertEqual(core.threads, 5)
        XCTAssertEqual(String(cString: core.domain), "example.net")
        XCTAssertEqual(withUnsafeBytes(of: core.token_key) { [UInt8]($0) }, tokenKey)
    }
}
