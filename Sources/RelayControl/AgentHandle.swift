import CRelayCore
import Foundation
import Logging
import Synchronization

/// Where the C agent's sentences go: its loop thread calls `emit` through a C function pointer.
final class AgentLogSink: Sendable {
    let logger: Logger
    init(logger: Logger) { self.logger = logger }

    func emit(level: Int32, event: String, text: String) {
        let mapped: Logger.Level =
            switch level {
            case Int32(RL_LOG_DEBUG): .debug
            case Int32(RL_LOG_INFO): .info
            case Int32(RL_LOG_NOTICE): .notice
            case Int32(RL_LOG_WARNING): .warning
            default: .error
            }
        logger.log(level: mapped, "\(event)", metadata: ["what": "\(text)"])
    }
}

/// Owns one C device agent (rl_agent) and the thread its blocking loop runs on.
final class AgentHandle: Sendable {
    // rl_agent_stop is safe from any thread; run and free happen once each, in order.
    private nonisolated(unsafe) let agent: OpaquePointer
    private let stopRequested = Mutex(false)
    private let strings: [OwnedCString]
    private let sink: AgentLogSink

    init(options: AgentOptions, secret: [UInt8], logger: Logger) throws {
        precondition(secret.count == RelayCrypto.secretLength, "secret must be 32 bytes")
        // Copies that outlive the call, since the header does not promise the agent copies.
        let relayCopy = OwnedCString(options.relay), idCopy = OwnedCString(options.deviceID)
        let forwardCopy = OwnedCString(options.forward)
        let tls = [options.tlsCA, options.tlsName, options.tlsCert, options.tlsKey].map { $0.map(OwnedCString.init) }
        var config = rl_agent_config()
        config.relay = UnsafePointer(relayCopy.pointer)
        config.device_id = UnsafePointer(idCopy.pointer)
        config.forward = UnsafePointer(forwardCopy.pointer)
        config.tls_ca = tls[0].map { UnsafePointer($0.pointer) }
        config.tls_name = tls[1].map { UnsafePointer($0.pointer) }
        config.tls_cert = tls[2].map { UnsafePointer($0.pointer) }
        config.tls_key = tls[3].map { UnsafePointer($0.pointer) }
        let sink = AgentLogSink(logger: logger)
        config.log = { ctx, level, event, text in
            guard let ctx, let event, let text else { return }
            Unmanaged<AgentLogSink>.fromOpaque(ctx).takeUnretainedValue()
                .emit(level: level, event: String(cString: event), text: String(cString: text))
        }
        config.log_ctx = Unmanaged.passUnretained(sink).toOpaque()  // `sink` outlives the agent
        self.sink = sink
        withUnsafeMutableBytes(of: &config.secret) { $0.copyBytes(from: secret) }
        defer { _ = withUnsafeMutableBytes(of: &config.secret) { $0.initializeMemory(as: UInt8.self, repeating: 0) } }
        // A write to a link the relay closed must be EPIPE, not the end of the process.
        signal(SIGPIPE, SIG_IGN)
        agent = try callReturningPointer("start the agent") { rl_agent_new(&config, $0, $1) }
        strings = [relayCopy, idCopy, forwardCopy] + tls.compactMap { $0 }
    }

    deinit { rl_agent_free(agent) }

    /// Runs the agent loop on a thread of its own (it blocks) until ``stop()``; returns
    /// whether it ended because it was asked to.
    func run() async -> Bool {
        _ = await withCheckedContinuation { (done: CheckedContinuation<Int32, Never>) in
            let thread = Thread { done.resume(returning: rl_agent_run(self.agent)) }
            thread.name = "relay-agent"
            thread.start()
        }
        return stopRequested.withLock { $0 }
    }

    /// Asks the loop to end; safe before, during or after ``run()``.
    func stop() {
        stopRequested.withLock { $0 = true }
        rl_agent_stop(agent)
    }

    func stats() -> rl_agent_stats {
        var stats = rl_agent_stats()
        rl_agent_stats_get(agent, &stats)
        return stats
    }
}
