import HalleyWebSocket

/// libFuzzer entry: arbitrary bytes as a permessage-deflate message. Inflate must never
/// crash or exceed its limit, and a shared (reset) inflater must agree with a fresh one.
// libFuzzer calls the entry from one thread only.
nonisolated(unsafe) let shared = Inflater(resetAfterMessage: true)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let limit = 1 << 16
    let fresh = Inflater(resetAfterMessage: true)
    let a = describe(fresh.inflate(input, limit: limit), limit)
    let b = describe(shared.inflate(input, limit: limit), limit)
    if a != b { fatalError("shared inflater disagrees: \(a) vs \(b)") }
    return 0
}

func describe(_ r: Inflater.Result, _ limit: Int) -> String {
    switch r {
    case .ok(let b):
        if b.count > limit { fatalError("inflated past the limit: \(b.count)") }
        return "ok \(b.count) \(b.reduce(0) { ($0 &* 31) &+ Int($1) })"
    case .tooBig: return "tooBig"
    case .corrupt: return "corrupt"
    }
}
