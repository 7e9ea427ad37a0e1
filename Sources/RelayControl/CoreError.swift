/// A failure the C side reported through its `err` buffer.
public struct CoreError: Error, CustomStringConvertible, Equatable {
    /// What was being done, e.g. "listen on --http 127.0.0.1:8080".
    public let operation: String
    /// The C side's own message (may be empty when it gave none).
    public let message: String

    public var description: String {
        message.isEmpty ? "\(operation) failed" : "\(operation): \(message)"
    }
}

/// The one place where a C call's `err` buffer becomes a thrown Swift error: `body` gets
/// the buffer and its length and returns the C result; `failed` says which results mean
/// failure (-1 by the header's convention, or NULL).
func callWithErrorBuffer<Result>(
    _ operation: @autoclosure () -> String,
    failed: (Result) -> Bool,
    _ body: (UnsafeMutablePointer<CChar>, Int) -> Result
) throws(CoreError) -> Result {
    var buffer = [CChar](repeating: 0, count: 512)
    let count = buffer.count
    let result = buffer.withUnsafeMutableBufferPointer { body($0.baseAddress!, count) }
    if failed(result) {
        throw CoreError(operation: operation(), message: String(cBuffer: buffer))
    }
    return result
}

/// For the header's int-returning calls: 0 (or an index) on success, -1 on failure.
func callReturningStatus(
    _ operation: @autoclosure () -> String,
    _ body: (UnsafeMutablePointer<CChar>, Int) -> Int32
) throws(CoreError) -> Int32 {
    try callWithErrorBuffer(operation(), failed: { $0 < 0 }, body)
}

/// For the header's constructors: a pointer on success, NULL on failure.
func callReturningPointer(
    _ operation: @autoclosure () -> String,
    _ body: (UnsafeMutablePointer<CChar>, Int) -> OpaquePointer?
) throws(CoreError) -> OpaquePointer {
    try callWithErrorBuffer(operation(), failed: { $0 == nil }, body)!
}
