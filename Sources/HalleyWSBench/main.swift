#if canImport(Glibc)
import Glibc
#endif

// halley-wsbench: a closed-loop WebSocket echo load generator (see Options.usage).
// One thread, epoll, non-blocking sockets, one read buffer, no Foundation.
let options = Options.parse(Array(CommandLine.arguments.dropFirst()))
if options.handshakes {
    exit(HandshakeBench(options).run())
}
let bench = Bench(options)
exit(bench.run())
