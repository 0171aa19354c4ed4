import HalleyHTTP

/// libFuzzer entry: feeds the input to the request parser whole and split at a point the
/// input itself chooses, and checks that both ways agree.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    var limits = HTTPLimits()
    limits.maxHeaderBytes = 4096
    limits.maxRequestLineBytes = 1024
    limits.maxBodyBytes = 65536
    let whole = FuzzDriver.run(bytes, limits: limits, split: nil)
    let split = size > 0 ? Int(bytes[0]) % (size + 1) : 0
    let pieces = FuzzDriver.run(bytes, limits: limits, split: split)
    if whole != pieces {
        fatalError("parser disagrees with itself when the input is split at \(split): \(whole) vs \(pieces)")
    }
    return 0
}
