import Foundation
import XCTest

@testable import RelayControl

/// The store's token records: minting records, listing, revoking and what a relay syncs.
final class TokenStoreTests: XCTestCase {
    private let t0 = Date(timeIntervalSince1970: 1_700_000_000)

    private func makeStore(devices: [String] = ["cam-1", "cam-2"]) throws -> (DeviceStore, String) {
        let directory = try makeTemporaryDirectory(self) + "/data"
        let store = try DeviceStore(directory: directory)
        for id in devices { _ = try store.add(id: id) }
        return (store, directory)
    }

    private func tid(_ token: String) -> String { String(token.split(separator: ".")[2]) }

    func testMintingRecordsTheTokenButNeverItsTextOrMAC() throws {
        let (store, directory) = try makeStore()
        let token = try store.mintToken(id: "cam-1", ttl: .seconds(3600), now: t0)
        let records = try store.tokens(now: t0)
        XCTAssertEqual(records.count, 1)
        let record = records[0]
        XCTAssertEqual(record.id, tid(token))
        XCTAssertEqual(record.device, "cam-1")
        XCTAssertEqual(record.createdAt.timeIntervalSince1970, t0.timeIntervalSince1970, accuracy: 0.001)
        XCTAssertEqual(record.expiresUnix, 1_700_003_600)
        XCTAssertNil(record.revokedAt)
        XCTAssertEqual(record.state(at: t0), .valid)

        // Every byte SQLite has written, main file and WAL.
        var written = Data()
        for name in try FileManager.default.contentsOfDirectory(atPath: directory) {
            written.append(try Data(contentsOf: URL(fileURLWithPath: directory + "/" + name)))
        }
        let mac = String(token.split(separator: ".")[3])
        XCTAssertNotNil(written.range(of: Data(record.id.utf8)), "the ID is found, so the scan sees the data")
        XCTAssertNil(written.range(of: Data(token.utf8)), "the token text must not be stored")
        XCTAssertNil(written.range(of: Data(mac.utf8)), "the MAC must not be stored")
    }

    func testListIsNewestFirstByDeviceAndHidesExpiredUnlessAll() throws {
        let (store, _) = try makeStore()
        let old = try store.mintToken(id: "cam-1", ttl: .seconds(60), now: t0)
        let other = try store.mintToken(id: "cam-2", ttl: .seconds(3600), now: t0 + 1)
        let new = try store.mintToken(id: "cam-1", ttl: .seconds(3600), now: t0 + 2)
        let later = t0 + 120  // `old` has expired

        XCTAssertEqual(try store.tokens(now: later).map(\.id), [tid(new), tid(other)])
        XCTAssertEqual(try store.tokens(includeExpired: true, now: later).map(\.id), [tid(new), tid(other), tid(old)])
        XCTAssertEqual(try store.tokens(device: "cam-1", includeExpired: true, now: later).map(\.id), [tid(new), tid(old)])
        XCTAssertEqual(
            try store.tokens(device: "cam-1", includeExpired: true, now: later).map { $0.state(at: later) },
            [.valid, .expired])
        XCTAssertEqual(
            try store.tokens(device: "cam-1", includeExpired: true, now: t0 + 60).map { $0.state(at: t0 + 60) },
            [.valid, .valid], "valid through its expiry second")
        XCTAssertThrowsError(try store.tokens(device: "ghost")) { error in
            XCTAssertEqual(error as? DeviceStoreError, .noSuchDevice("ghost"))
        }
    }

    func testRevokeMarksTheTokenAndBumpsTheChangeCounter() throws {
        let (store, _) = try makeStore()
        let kept = try store.mintToken(id: "cam-1", ttl: .seconds(3600), now: t0)
        let token = try store.mintToken(id: "cam-1", ttl: .seconds(3600), now: t0)
        let seq = try store.currentSeq()

        XCTAssertEqual(try store.revokeTokens([tid(token).uppercased()], now: t0 + 5), [tid(token)], "any case")
        XCTAssertEqual(try store.currentSeq(), seq + 1)
        let states = Dictionary(uniqueKeysWithValues: try store.tokens(now: t0 + 5).map { ($0.id, $0.state(at: t0 + 5)) })
        XCTAssertEqual(states, [tid(token): .revoked, tid(kept): .valid])
        let revoked = try store.tokens(now: t0 + 5).first { $0.id == tid(token) }
        XCTAssertEqual(revoked?.revokedAt?.timeIntervalSince1970 ?? 0, t0.timeIntervalSince1970 + 5, accuracy: 0.001)

        // Again: nothing new, no bump, the first revocation time stays.
        XCTAssertEqual(try store.revokeTokens([tid(token)], now: t0 + 9), [])
        XCTAssertEqual(try store.currentSeq(), seq + 1)
        XCTAssertEqual(
            try store.tokens(now: t0 + 9).first { $0.id == tid(token) }?.revokedAt?.timeIntervalSince1970 ?? 0,
            t0.timeIntervalSince1970 + 5, accuracy: 0.001)
    }

    func testAWholeTokenNamesItsID() throws {
        let (store, _) = try makeStore()
        let token = try store.mintToken(id: "cam-1", ttl: .seconds(3600), now: t0)
        XCTAssertEqual(try store.revokeTokens([token], now: t0), [tid(token)])
    }

    func testRevokeByDeviceTakesEveryUnexpiredTokenOfThatDeviceOnly() throws {
        let (store, _) = try makeStore()
        let a = try store.mintToken(id: "cam-1", ttl: .seconds(3600), now: t0)
        let b = try store.mintToken(id: "cam-1", ttl: .seconds(3600), now: t0 + 1)
        let expired = try store.mintToken(id: "cam-1", ttl: .seconds(1), now: t0)
        let other = try store.mintToken(id: "cam-2", ttl: .seconds(3600), now: t0)
        let seq = try store.currentSeq()

        XCTAssertEqual(try store.revokeTokens(device: "cam-1", now: t0 + 10), [tid(b), tid(a)])
        XCTAssertEqual(try store.currentSeq(), seq + 1, "one bump for the batch")
        let states = Dictionary(
            uniqueKeysWithValues: try store.tokens(includeExpired: true, now: t0 + 10).map { ($0.id, $0.state(at: t0 + 10)) })
        XCTAssertEqual(states, [tid(a): .revoked, tid(b): .revoked, tid(expired): .expired, tid(other): .valid])

        XCTAssertEqual(try store.revokeTokens(device: "cam-1", now: t0 + 10), [], "nothing left to revoke")
        XCTAssertEqual(try store.currentSeq(), seq + 1)
        XCTAssertThrowsError(try store.revokeTokens(device: "ghost")) { error in
            XCTAssertEqual(error as? DeviceStoreError, .noSuchDevice("ghost"))
        }
    }

    func testAnUnknownOrMalformedIDRevokesNothing() throws {
        let (store, _) = try makeStore()
        let token = try store.mintToken(id: "cam-1", ttl: .seconds(3600), now: t0)
        let seq = try store.currentSeq()

        XCTAssertThrowsError(try store.revokeTokens([tid(token), "0011223344556677"], now: t0)) { error in
            XCTAssertEqual(error as? DeviceStoreError, .noSuchToken("0011223344556677"))
            XCTAssertTrue("\(error)".contains("relay token list"), "\(error)")
        }
        for bad in ["", "0011", "00112233445566zz", "0011223344556677aa", "a.b.c"] {
            XCTAssertThrowsError(try store.revokeTokens([tid(token), bad], now: t0), "'\(bad)'") { error in
                XCTAssertEqual(error as? DeviceStoreError, .invalidTokenID(bad))
            }
        }
        XCTAssertEqual(try store.currentSeq(), seq, "all or none")
        XCTAssertEqual(try store.tokens(now: t0).map { $0.state(at: t0) }, [.valid])
    }

    func testARunningRelaySeesRevocationsAsChanges() throws {
        let (store, directory) = try makeStore()
        let short = try store.mintToken(id: "cam-1", ttl: .seconds(60), now: t0)
        let long = try store.mintToken(id: "cam-1", ttl: .seconds(3600), now: t0)
        let seq = try store.currentSeq()
        XCTAssertEqual(try store.changes(since: seq, now: t0).revocations, [])

        // The CLI revokes in its own process; the relay's store sees it.
        let cli = try DeviceStore(directory: directory, createIfMissing: false)
        try cli.revokeTokens([tid(short), tid(long)], now: t0)
        let changes = try store.changes(since: seq, now: t0)
        XCTAssertEqual(changes.seq, seq + 1)
        XCTAssertEqual(
            Set(changes.revocations.map(\.id)), [tid(short), tid(long)])
        XCTAssertEqual(changes.revocations.first { $0.id == tid(long) }?.expiresUnix, 1_700_003_600)
        XCTAssertEqual(changes.revocations.first?.idBytes.count, 8)
        XCTAssertEqual(try store.changes(since: seq + 1, now: t0).revocations, [], "nothing after")

        // An expired token needs no refusing: left out of changes and of the start-up load.
        XCTAssertEqual(try store.changes(since: seq, now: t0 + 61).revocations.map(\.id), [tid(long)])
        XCTAssertEqual(try store.revokedTokens(now: t0 + 61).map(\.id), [tid(long)])
        XCTAssertEqual(try store.revokedTokens(now: t0 + 3601), [])
    }

    func testRemovingADeviceForgetsItsTokens() throws {
        let (store, _) = try makeStore()
        _ = try store.mintToken(id: "cam-1", ttl: .seconds(3600), now: t0)
        let other = try store.mintToken(id: "cam-2", ttl: .seconds(3600), now: t0)
        try store.remove(id: "cam-1")
        XCTAssertEqual(try store.tokens(includeExpired: true, now: t0).map(\.id), [tid(other)])
    }

    func testTokenIDsInText() {
        XCTAssertEqual(Tokens.id(in: "00112233AABBCCDD"), "00112233aabbccdd")
        XCTAssertEqual(Tokens.id(in: "cam-1.1700000000.00112233aabbccdd.AAAAAAAAAAAAAAAAAAAAAA"), "00112233aabbccdd")
        for bad in ["", "00112233aabbccd", "00112233aabbccdde", "0011223344556g77", "cam-1.1.2.3", "a.b"] {
            XCTAssertNil(Tokens.id(in: bad), bad)
        }
    }
}
