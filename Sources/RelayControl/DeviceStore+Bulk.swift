import Foundation

extension DeviceStore {
    /// Provisions `count` devices at once from their derived keys, in one transaction with one
    /// change-counter bump, for benchmarks and migrations: `device(i)` gives the ID and the
    /// 16-byte key K of the i-th device. The store still never sees a secret; the caller keeps
    /// (or can re-derive) them. Fails, changing nothing, when an ID is invalid or already
    /// provisioned. Returns the new change counter value.
    @discardableResult
    public func bulkAdd(
        count: Int, now: Date = Date(), device: (Int) throws -> (id: String, key: [UInt8])
    ) throws -> Int64 {
        try write { tx -> Int64 in
            let seq = try Self.bumpSeq(tx)
            let created = now.timeIntervalSince1970
            for index in 0..<count {
                let (id, key) = try device(index)
                guard RelayCrypto.isValidDeviceID(id) else { throw DeviceStoreError.invalidDeviceID(id) }
                guard key.count == RelayCrypto.deviceKeyLength else {
                    throw CryptoError.badLength("device key", key.count, RelayCrypto.deviceKeyLength)
                }
                do {
                    try tx.execute(
                        "INSERT INTO devices (id, key, created_at, seq) VALUES (?, ?, ?, ?)",
                        [.text(id), .blob(key), .double(created), .int(seq)])
                } catch let failure as StoreFailure where failure.uniqueViolation {
                    throw DeviceStoreError.deviceExists(id)
                }
            }
            return seq
        }
    }
}
