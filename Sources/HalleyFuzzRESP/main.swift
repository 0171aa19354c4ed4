import HalleyProtocol

/// libFuzzer entry for the RESP parser (what a Redis server, or anything posing as one, sends):
/// the input read whole and split at a point it chooses must give the same values and the same
/// error; every value read, encoded again, must read back as itself.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeRawBufferPointer(start: data, count: size))
    var limits = RESPParser.Limits()
    limits.maxBulkBytes = 1 << 16
    limits.maxElements = 1 << 12
    func readAll(_ pieces: [ArraySlice<UInt8>]) -> ([RESPValue], RESPError?) {
        var p = RESPParser(limits: limits)
        var out: [RESPValue] = []
        do {
            for piece in pieces {
                p.append(Array(piece))
                while let v = try p.next() { out.append(v) }
            }
        } catch {
            return (out, error)
        }
        return (out, nil)
    }
    let cut = size > 0 ? Int(bytes[0]) % (size + 1) : 0
    let whole = readAll([bytes[...]])
    let split = readAll([bytes[..<cut], bytes[cut...]])
    if !same(whole.0, split.0) || whole.1 != split.1 {
        fatalError("split at \(cut) reads \(split) where whole reads \(whole)")
    }
    for v in whole.0 {
        var p = RESPParser(limits: limits)
        p.append(RESP.encode(v))
        let back: RESPValue?
        do { back = try p.next() } catch { fatalError("\(v) encodes to bytes that do not read: \(error)") }
        guard let back, same([v], [back]) || v == .null else {
            fatalError("\(v) reads back as \(String(describing: back))")
        }
        if p.pendingBytes != 0 { fatalError("\(v) encodes to more than one value") }
    }
    return 0
}

/// Equal, NaN counted equal to NaN.
func same(_ a: [RESPValue], _ b: [RESPValue]) -> Bool {
    guard a.count == b.count else { return false }
    for (x, y) in zip(a, b) where x != y {
        if case .double(let p) = x, case .double(let q) = y, p.isNaN && q.isNaN { continue }
        if case .array(let e) = x, case .array(let f) = y, same(e, f) { continue }
        if case .set(let e) = x, case .set(let f) = y, same(e, f) { continue }
        if case .push(let e) = x, case .push(let f) = y, same(e, f) { continue }
        if case .map(let e) = x, case .map(let f) = y, same(e, f) { continue }
        return false
    }
    return true
}
