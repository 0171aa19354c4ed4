/// Runs the parser over bytes the way a connection does (keeping unconsumed bytes and
/// presenting them again with more) and records what it saw. Used by the tests and the
/// fuzzer to check that splitting the input anywhere changes nothing.
public enum FuzzDriver {
    public static func run(_ input: UnsafeRawBufferPointer, limits: HTTPLimits, split: Int?) -> [String] {
        var pieces: [UnsafeRawBufferPointer] = []
        if let s = split, s > 0, s < input.count {
            pieces = [UnsafeRawBufferPointer(rebasing: input[0..<s]), UnsafeRawBufferPointer(rebasing: input[s...])]
        } else {
            pieces = [input]
        }
        return run(pieces: pieces, limits: limits)
    }

    public static func run(pieces: [UnsafeRawBufferPointer], limits: HTTPLimits) -> [String] {
        var parser = HTTPRequestParser(limits: limits)
        var pending: [UInt8] = []
        var log: [String] = []
        var body: [UInt8] = []
        for piece in pieces {
            pending.append(contentsOf: piece)
            var stop = false
            while !stop {
                let (result, used) = pending.withUnsafeBytes { buf -> (String?, Int) in
                    switch parser.parse(buf) {
                    case .needMore(let c):
                        return (nil, c)
                    case .head(let h, let c):
                        return (
                            "head \(h.method) \(h.target) 1.\(h.minorVersion) fields=\(h.headers.count) cl=\(h.contentLength.map(String.init) ?? "-") chunked=\(h.isChunked) keepAlive=\(h.keepAlive) continue=\(h.expectsContinue)",
                            c
                        )
                    case .body(let r, let c):
                        body.append(contentsOf: buf[r])
                        return ("", c)
                    case .end(let c):
                        return ("end \(body.count) \(body.reduce(0) { ($0 &* 31) &+ Int($1) })", c)
                    case .error(let e):
                        return ("error \(e.status)", -1)
                    }
                }
                if used < 0 {
                    log.append(result!)
                    return log
                }
                pending.removeFirst(used)
                if let r = result {
                    if r.hasPrefix("end") { body = [] }
                    if !r.isEmpty { log.append(r) }
                } else {
                    stop = true
                }
            }
        }
        return log
    }
}
