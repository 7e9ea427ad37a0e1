import CRelayCore

/// Returns freed heap memory to the system after a start-up that allocated and freed a lot.
func releaseFreeMemory() {
    rl_release_free_memory()
}
