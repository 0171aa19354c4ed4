#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux
import HalleyCore

/// During a graceful shutdown a second SIGINT or SIGTERM ends the process at once. (In its
/// own file: a closure written in main.swift would be isolated to the main actor.)
func startSecondSignalWatcher() {
    var watcher = pthread_t()
    pthread_create(
        &watcher, nil,
        { _ in
            while true {
                let s = halley_wait_signal()
                if s == SIGHUP { continue }
                Log.warning("signal \(s) during shutdown: exiting now")
                exit(1)
            }
        }, nil)
}
