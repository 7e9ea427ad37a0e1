#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A C string copy that lives as long as this object: for `const char *` fields the C side
/// may keep using after the call that received them (rl_core_config.domain, the agent's
/// addresses).
final class OwnedCString: @unchecked Sendable {
    // Written once in init, freed in deinit; never mutated in between.
    let pointer: UnsafeMutablePointer<CChar>

    init(_ text: String) {
        guard let copy = strdup(text) else { fatalError("out of memory copying a C string") }
        pointer = copy
    }

    deinit { free(pointer) }
}

extension String {
    /// The text up to the first NUL of a C buffer (or the whole buffer when there is none).
    init(cBuffer: [CChar]) {
        let bytes = cBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        self = String(decoding: bytes, as: UTF8.self)
    }

    /// The text up to the first NUL of a fixed-size C array, which Swift imports as a tuple.
    init<Tuple>(cTuple: Tuple) {
        self = withUnsafeBytes(of: cTuple) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}
