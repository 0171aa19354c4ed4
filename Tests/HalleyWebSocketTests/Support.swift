import HalleyWebSocket

/// A client frame: masked with `key` (RFC 6455 §5.3).
func clientFrame(
    _ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, rsv1: Bool = false, rsv: UInt8 = 0,
    masked: Bool = true, key: [UInt8] = [0x37, 0xfa, 0x21, 0x3d]
) -> [UInt8] {
    var out: [UInt8] = [(fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | rsv | opcode]
    let m: UInt8 = masked ? 0x80 : 0
    if payload.count < 126 {
        out.append(m | UInt8(payload.count))
    } else if payload.count <= 0xFFFF {
        out += [m | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
    } else {
        out.append(m | 127)
        for i in (0..<8).reversed() { out.append(UInt8((payload.count >> (8 * i)) & 0xFF)) }
    }
    if masked {
        out += key
        for (i, b) in payload.enumerated() { out.append(b ^ key[i & 3]) }
    } else {
        out += payload
    }
    return out
}

/// What a reader reported, as comparable values.
enum Seen: Equatable {
    case text([UInt8]), binary([UInt8]), ping([UInt8]), pong([UInt8])
    case close(UInt16?, [UInt8])
    case fail(UInt16)
}

/// Feeds `pieces` to one reader (copying each, since the reader unmasks in place).
func read(_ pieces: [[UInt8]], limits: WebSocketReader.Limits = .init(), inflater: Inflater? = nil) -> [Seen] {
    var reader = WebSocketReader(limits: limits, inflater: inflater)
    var seen: [Seen] = []
    for p in pieces {
        var copy = p
        copy.withUnsafeMutableBytes { buf in
            reader.read(buf) { e in
                switch e {
                case .text(let b): seen.append(.text(Array(b)))
                case .binary(let b): seen.append(.binary(Array(b)))
                case .ping(let b): seen.append(.ping(Array(b)))
                case .pong(let b): seen.append(.pong(Array(b)))
                case .close(let c, let r): seen.append(.close(c, Array(r)))
                case .fail(let c, _): seen.append(.fail(c))
                }
            }
        }
    }
    return seen
}

/// Whole, byte by byte, and split at every offset (or at `offsets` for large inputs): all the
/// same.
func readEverySplit(
    _ bytes: [UInt8], limits: WebSocketReader.Limits = .init(), offsets: [Int]? = nil,
    makeInflater: () -> Inflater? = { nil }
) -> [Seen] {
    let whole = read([bytes], limits: limits, inflater: makeInflater())
    if offsets == nil {
        let byByte = read(bytes.map { [$0] }, limits: limits, inflater: makeInflater())
        precondition(byByte == whole, "byte by byte differs: \(byByte) vs \(whole)")
    }
    for s in offsets ?? Array(1..<max(1, bytes.count)) where s > 0 && s < bytes.count {
        let two = read([Array(bytes[..<s]), Array(bytes[s...])], limits: limits, inflater: makeInflater())
        precondition(two == whole, "split at \(s) differs")
    }
    return whole
}
