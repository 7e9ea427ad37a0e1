import Glibc
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

/// Sleeps for `duration` even in a cancelled task (where Task.sleep returns at once), so
/// that a loop bounded by a deadline neither spins nor cuts its wait short.
func sleepEvenIfCancelled(_ duration: Duration) async {
    if Task.isCancelled {
        usleep(UInt32(clamping: duration.wholeMilliseconds * 1000))
    } else {
        try? await Task.sleep(for: duration)
    }
}
