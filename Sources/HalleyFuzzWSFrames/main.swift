import HalleyWebSocket

/// libFuzzer entry: client bytes into the frame reader, whole and split at a point the input
/// chooses (byte 0), with permessage-deflate when byte 1 is odd; both ways must agree.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size >= 2 else { return 0 }
    let split = Int(data[0]) % (size - 1)
    let deflate = data[1] & 1 == 1
    let input = Array(UnsafeBufferPointer(start: data + 2, count: size - 2))
    let whole = run([input], deflate: deflate)
    let pieces = run(
        [Array(input[..<min(split, input.count)]), Array(input[min(split, input.count)...])], deflate: deflate)
    if whole != pieces { fatalError("reader disagrees with itself when split at \(split): \(whole) vs \(pieces)") }
    return 0
}

func run(_ pieces: [[UInt8]], deflate: Bool) -> [String] {
    var limits = WebSocketReader.Limits()
    limits.maxMessageBytes = 1 << 16
    var reader = WebSocketReader(limits: limits, inflater: deflate ? Inflater(resetAfterMessage: false) : nil)
    var log: [String] = []
    for var p in pieces {
        p.withUnsafeMutableBytes { buf in
            reader.read(buf) { e in
                switch e {
                case .text(let b): log.append("text \(b.count) \(b.reduce(0) { ($0 &* 31) &+ Int($1) })")
                case .binary(let b): log.append("binary \(b.count) \(b.reduce(0) { ($0 &* 31) &+ Int($1) })")
                case .ping(let b): log.append("ping \(Array(b))")
                case .pong(let b): log.append("pong \(Array(b))")
                case .close(let c, let r): log.append("close \(String(describing: c)) \(Array(r))")
                case .fail(let c, _): log.append("fail \(c)")
                }
            }
        }
    }
    return log
}
