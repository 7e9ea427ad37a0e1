import Foundation
import XCTest

@testable import RelayControl

final class AdminStoreTests: XCTestCase {
    private func makeStore() throws -> DeviceStore {
        try DeviceStore(directory: try makeTemporaryDirectory(self) + "/data")
    }

    func testAdminKeysAreStoredHashedAndRevocable() throws {
        let store = try makeStore()
        let (id, key) = try store.createAdminKey(name: "ops")
        XCTAssertTrue(key.hasPrefix("rk_") && key.count == 3 + 64)
        XCTAssertEqual(try store.adminKeyHashes(), [DeviceStore.adminKeyHash(key)])
        let raw = try Data(contentsOf: URL(fileURLWithPath: store.databasePath))
        XCTAssertNil(raw.range(of: Data(key.utf8)), "the key text is not in the store")
        let check = AdminKeyCheck(store: store)
        XCTAssertTrue(check.check(key))
        XCTAssertFalse(check.check(key + "0"))
        XCTAssertFalse(check.check(""))
        // A local key replaces the previous local key, never an operator's.
        let local1 = try store.createAdminKey(name: "local", local: true)
        let local2 = try store.createAdminKey(name: "local", local: true)
        XCTAssertEqual(try store.adminKeys().map(\.id).sorted(), [id, local2.id].sorted())
        XCTAssertNotEqual(local1.id, local2.id)
        // Another relay's local key (a shared store) is left alone.
        let other = try store.createAdminKey(name: "local of another relay", local: true)
        try store.removeLocalAdminKeys(name: "local")
        XCTAssertEqual(try store.adminKeys().map(\.id).sorted(), [id, other.id].sorted())
        try store.removeLocalAdminKeys(name: "local of another relay")
        XCTAssertTrue(try store.revokeAdminKey(id: id))
        XCTAssertFalse(try store.revokeAdminKey(id: id))
        XCTAssertEqual(try store.adminKeys(), [])
    }

    func testDevicePagesByCursorAndSearch() throws {
        let store = try makeStore()
        for id in ["cam-3", "cam-1", "thermo-1", "cam-2"] { _ = try store.add(id: id) }
        XCTAssertEqual(try store.devicePage(after: nil, limit: 2).map(\.id), ["cam-1", "cam-2"])
        XCTAssertEqual(try store.devicePage(after: "cam-2", limit: 2).map(\.id), ["cam-3", "thermo-1"])
        XCTAssertEqual(try store.devicePage(after: "thermo-1", limit: 2).map(\.id), [])
        XCTAssertEqual(try store.devicePage(after: nil, limit: 10, search: "rmo").map(\.id), ["thermo-1"])
        XCTAssertEqual(try store.deviceCount(), 4)
        XCTAssertNil(try store.device("nope"))
    }

    func testRotatedSecretReplacesTheKeyAndBumpsTheSequence() throws {
        let store = try makeStore()
        let old = try store.add(id: "cam-1")
        let seq = try store.currentSeq()
        let new = try store.rotateSecret(id: "cam-1")
        XCTAssertNotEqual(old, new)
        XCTAssertEqual(try store.key(for: "cam-1"), try RelayCrypto.deviceKey(secret: new))
        let changes = try store.changes(since: seq)
        XCTAssertEqual(changes.upserts.map(\.id), ["cam-1"])
        XCTAssertThrowsError(try store.rotateSecret(id: "ghost"))
    }

    func testHandWrittenJSON() throws {
        var out: [UInt8] = []
        JSONValue.object([
            ("s", .string("a\"b\\c\n\u{1}é")), ("n", .null), ("b", .bool(true)), ("i", .int(-3)),
            ("a", .array([.uint(1), .double(1.5)])),
        ]).write(into: &out)
        let parsed = try JSONSerialization.jsonObject(with: Data(out)) as? [String: Any]
        XCTAssertEqual(parsed?["s"] as? String, "a\"b\\c\n\u{1}é")
        XCTAssertTrue(parsed?["n"] is NSNull)
        XCTAssertEqual(parsed?["i"] as? Int, -3)
        XCTAssertEqual((parsed?["a"] as? [Any])?.count, 2)
        for unix in [0, 1_796_261_596, 951_782_400] as [Int64] {
            XCTAssertEqual(
                JSONValue.iso8601(unix: unix),
                ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(unix))))
        }
    }
}

final class AdminOpenAPITests: XCTestCase {
    /// Every registered route is documented and every documented operation is a route
    /// (router() itself checks that it registers exactly AdminAPI.routes).
    func testTheDocumentListsExactlyTheRoutes() throws {
        let doc = try JSONSerialization.jsonObject(with: Data(AdminOpenAPI.document.utf8)) as? [String: Any]
        let paths = try XCTUnwrap(doc?["paths"] as? [String: [String: Any]])
        let methods: Set<String> = ["get", "post", "put", "patch", "delete"]
        let documented = Set(paths.flatMap { path, item in item.keys.filter(methods.contains).map { "\($0.uppercased()) \(path)" } })
        let routes = Set(AdminAPI.routes.map { "\($0.0) \($0.1)" })
        XCTAssertEqual(documented, routes)
    }

    func testRouterRegistersTheTable() throws {
        let store = try DeviceStore(directory: try makeTemporaryDirectory(self) + "/data")
        var configuration = RelayConfiguration(environment: [:])
        configuration.capacity = 16
        let core = try RelayCore(configuration: configuration, tokenKey: try store.tokenKey())
        let sync = DeviceSync(store: store, core: core, startSeq: 0, logger: .init(label: "test"))
        let api = AdminAPI(store: store, core: core, sync: sync, keys: AdminKeyCheck(store: store), logger: .init(label: "test"))
        _ = api.router()  // traps when the registrations and AdminAPI.routes differ
    }
}
