#if canImport(Glibc)
import Glibc
#endif

// halley-fanout: fan-out and long-poll load generator for halley and Nchan (see Options.usage).
// One thread, epoll, non-blocking sockets, no Foundation.
let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
if options.selfTest {
    exit(selfTest())
}
let bench = Bench(options)
exit(bench.run())
