import ServiceLifecycle

/// Runs `tick` every `interval` until graceful shutdown or cancellation. The sleep is
/// cancelled on shutdown, so a stop never waits out a whole interval.
func poll(every interval: Duration, _ tick: @escaping @Sendable () async -> Void) async {
    try? await cancelWhenGracefulShutdown {
        while !Task.isCancelled {
            await tick()
            try await Task.sleep(for: interval)
        }
    }
}
