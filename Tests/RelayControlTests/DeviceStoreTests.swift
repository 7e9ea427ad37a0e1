import Foundation
import XCTest

@testable import RelayControl

final class DeviceStoreTests: XCTestCase {
    private func makeStore() throws -> (DeviceStore, String) {
        let directory = try makeTemporaryDirectory(self) + "/data"
        return (try DeviceStore(directory: directory), directory)
    }

    func testAddListRemove() throws {
        let (store, _) = try makeStore()
        let before = Date()
        let secret = try store.add(id: "cam-1")
        _ = try store.add(id: "alpha")

        XCTAssertEqual(secret.count, 32)
        let devices = try store.list()
        XCTAssertEqual(devices.map(\.id), ["alpha", "cam-1"], "listed in ID order")
        XCTAssertEqual(devices[1].createdAt.timeIntervalSince1970, before.timeIntervalSince1970, accuracy: 5)

        try store.remove(id: "cam-1")
        XCTAssertEqual(try store.list().map(\.id), ["alpha"])
        XCTAssertThrowsError(try store.key(for: "cam-1")) { error in
            XCTAssertEqual(error as? DeviceStoreError, .noSuchDevice("cam-1"))
        }
    }

    func testEachAddMakesAFreshSecret() throws {
        let (store, _) = try makeStore()
        let first = try store.add(id: "a")
        try store.remove(id: "a")
        let second = try store.add(id: "a")
        XCTAssertNotEqual(first, second)
        XCTAssertEqual(try store.key(for: "a"), try RelayCrypto.deviceKey(secret: second))
    }

    func testDuplicateAddIsRefusedWithAHint() throws {
        let (store, _) = try makeStore()
        let secret = try store.add(id: "cam-1")
        XCTAssertThrowsError(try store.add(id: "cam-1")) { error in
            XCTAssertEqual(error as? DeviceStoreError, .deviceExists("cam-1"))
            XCTAssertEqual(
                "\(error)", "device 'cam-1' already exists; remove it first or pick another ID")
        }
        // The first device's key is untouched by the refused add.
        XCTAssertEqual(try store.key(for: "cam-1"), try RelayCrypto.deviceKey(secret: secret))
    }

    func testRemovingAMissingDeviceFails() throws {
        let (store, _) = try makeStore()
        XCTAssertThrowsError(try store.remove(id: "ghost")) { error in
            XCTAssertEqual(error as? DeviceStoreError, .noSuchDevice("ghost"))
            XCTAssertTrue("\(error)".contains("relay device list"))
        }
        XCTAssertEqual(try store.currentSeq(), 0, "a failed remove changes nothing")
    }

    func testInvalidIDsAreRefused() throws {
        let (store, _) = try makeStore()
        for id in ["", "Cam", "-a", "a-", "a_b", String(repeating: "a", count: 64)] {
            XCTAssertThrowsError(try store.add(id: id), "'\(id)'") { error in
                XCTAssertEqual(error as? DeviceStoreError, .invalidDeviceID(id))
            }
        }
        XCTAssertEqual(try store.list(), [])
    }

    func testOnlyTheDerivedKeyIsStoredNeverTheSecret() throws {
        let (store, directory) = try makeStore()
        let secret = try store.add(id: "cam-1")
        let key = try RelayCrypto.deviceKey(secret: secret)
        XCTAssertEqual(try store.key(for: "cam-1"), key)

        // Every byte SQLite has written, main file and WAL.
        var written = Data()
        for name in try FileManager.default.contentsOfDirectory(atPath: directory) {
            written.append(try Data(contentsOf: URL(fileURLWithPath: directory + "/" + name)))
        }
        XCTAssertNotNil(written.range(of: Data(key)), "the key is found, so the scan sees the data")
        XCTAssertNil(written.range(of: Data(secret)), "raw secret must not be stored")
        XCTAssertNil(written.range(of: Data(Hex.encode(secret).utf8)), "hex secret must not be stored")
        XCTAssertNil(written.range(of: Data(secret.prefix(16))), "no part of the secret is stored")
    }

    func testDirectoryIs0700AndDatabaseIs0600EvenWithAPermissiveUmask() throws {
        let directory = try makeTemporaryDirectory(self) + "/nested/data"
        let old = umask(0)
        defer { umask(old) }
        let store = try DeviceStore(directory: directory)
        _ = try store.add(id: "cam-1")

        XCTAssertEqual(try permissions(directory), 0o700)
        XCTAssertEqual(try permissions(store.databasePath), 0o600)
        for suffix in ["-wal", "-shm"] where FileManager.default.fileExists(atPath: store.databasePath + suffix) {
            XCTAssertEqual(try permissions(store.databasePath + suffix) & 0o077, 0, suffix)
        }
    }

    func testAnExistingDirectoryKeepsItsModeAndALooseDatabaseIsTightened() throws {
        let directory = try makeTemporaryDirectory(self)
        XCTAssertEqual(chmod(directory, 0o755), 0)
        let path = directory + "/" + DeviceStore.fileName
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o644]))

        let store = try DeviceStore(directory: directory)
        XCTAssertEqual(try permissions(directory), 0o755, "a directory the operator made is left alone")
        XCTAssertEqual(try permissions(store.databasePath), 0o600)
    }

    func testChangeTracking() throws {
        let (store, _) = try makeStore()
        XCTAssertEqual(try store.currentSeq(), 0)
        XCTAssertEqual(try store.changes(since: 0).upserts.count, 0)

        let secretA = try store.add(id: "a")
        _ = try store.add(id: "b")
        XCTAssertEqual(try store.currentSeq(), 2)

        let all = try store.changes(since: 0)
        XCTAssertEqual(all.seq, 2)
        XCTAssertEqual(all.upserts.map(\.id), ["a", "b"])
        XCTAssertEqual(all.upserts[0].key, try RelayCrypto.deviceKey(secret: secretA))
        XCTAssertEqual(all.removals, [])

        let afterFirst = try store.changes(since: 1)
        XCTAssertEqual(afterFirst.upserts.map(\.id), ["b"])

        try store.remove(id: "a")
        let afterRemove = try store.changes(since: 2)
        XCTAssertEqual(afterRemove.seq, 3)
        XCTAssertEqual(afterRemove.upserts.map(\.id), [])
        XCTAssertEqual(afterRemove.removals, ["a"])

        // Removed, then added again: one upsert with the new key, no removal.
        let secretA2 = try store.add(id: "a")
        let readded = try store.changes(since: 2)
        XCTAssertEqual(readded.seq, 4)
        XCTAssertEqual(readded.upserts.map(\.id), ["a"])
        XCTAssertEqual(readded.upserts[0].key, try RelayCrypto.deviceKey(secret: secretA2))
        XCTAssertEqual(readded.removals, [])

        let nothing = try store.changes(since: 4)
        XCTAssertEqual(nothing.seq, 4)
        XCTAssertTrue(nothing.upserts.isEmpty && nothing.removals.isEmpty)
    }

    func testAnotherProcessesChangesAreSeen() throws {
        // The CLI and the relay each open their own store on the same file.
        let (relaySide, directory) = try makeStore()
        let cliSide = try DeviceStore(directory: directory, createIfMissing: false)
        _ = try cliSide.add(id: "cam-9")
        let changes = try relaySide.changes(since: 0)
        XCTAssertEqual(changes.upserts.map(\.id), ["cam-9"])
        XCTAssertEqual(changes.seq, 1)
    }

    func testTokenKeyIsMadeOnceAndSurvivesReopening() throws {
        let directory = try makeTemporaryDirectory(self) + "/data"
        let first = try DeviceStore(directory: directory).tokenKey()
        let again = try DeviceStore(directory: directory).tokenKey()
        XCTAssertEqual(first.count, 32)
        XCTAssertEqual(first, again)
        XCTAssertNotEqual(first, [UInt8](repeating: 0, count: 32))

        let other = try DeviceStore(directory: try makeTemporaryDirectory(self)).tokenKey()
        XCTAssertNotEqual(first, other, "each store has its own key")
    }

    func testOpeningWithoutCreateRequiresAnExistingStore() throws {
        let directory = try makeTemporaryDirectory(self) + "/typo"
        XCTAssertThrowsError(try DeviceStore(directory: directory, createIfMissing: false)) { error in
            guard case .storeMissing = error as? DeviceStoreError else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains("--data"))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory), "nothing is created")
    }

    func testADataPathThatIsAFileIsRefused() throws {
        let file = try makeTemporaryDirectory(self) + "/file"
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
        XCTAssertThrowsError(try DeviceStore(directory: file)) { error in
            XCTAssertTrue("\(error)".contains("not a directory"), "\(error)")
        }
    }
}
