import CRelayCore

/// One finished terminal session, copied out of the core's rl_session_record.
public struct SessionRecord: Sendable, Equatable {
    public enum Outcome: String, Sendable {
        case relayed
        case refused
        case timeout
        case deviceLost = "device_lost"
        case aborted
        case unknown
    }

    public let deviceID: String
    public let sessionID: String
    /// The HTTP status the relay answered itself, else the device's latest final status
    /// (0 when no response came).
    public let status: UInt32
    public let outcome: Outcome
    public let durationMicroseconds: UInt64
    public let bytesToDevice: UInt64
    public let bytesToTerminal: UInt64
    /// Served on an idle link, with no wake.
    public let reused: Bool

    init(_ record: rl_session_record) {
        deviceID = String(cTuple: record.device_id)
        sessionID = String(cTuple: record.session_id)
        status = record.status
        switch Int(record.outcome) {
        case Int(RL_OUTCOME_RELAYED): outcome = .relayed
        case Int(RL_OUTCOME_REFUSED): outcome = .refused
        case Int(RL_OUTCOME_TIMEOUT): outcome = .timeout
        case Int(RL_OUTCOME_DEVICE_LOST): outcome = .deviceLost
        case Int(RL_OUTCOME_ABORTED): outcome = .aborted
        default: outcome = .unknown
        }
        durationMicroseconds = record.duration_us
        bytesToDevice = record.bytes_to_device
        bytesToTerminal = record.bytes_to_terminal
        reused = record.reused != 0
    }
}
