#if canImport(Glibc)
import Glibc
#endif
import HalleyCrypto

/// `verify` on the query's bytes as sent, without a string per parameter: this runs for every
/// signed API request, where parsing the query into strings and writing the signed text from
/// them cost about 9,000 instructions of 62,000.
extension PusherSignature {
    /// `verify(…query:…)` for the query as sent (`rawQuery`: the target after `?`). A request
    /// the byte path accepts is accepted; anything else goes through the string path, which
    /// gives the reason (so every answer is the string path's).
    public static func verify(
        method: String, path: String, rawQuery: Substring?, body: [UInt8],
        now: Int, secretsFor: (String) -> [String]
    ) throws(Failure) -> String {
        if let key = accepted(
            method: method, path: path, rawQuery: rawQuery, body: body, now: now, secretsFor: secretsFor)
        {
            return key
        }
        return try verify(
            method: method, path: path, query: Query.parse(rawQuery), body: body, now: now, secretsFor: secretsFor)
    }

    /// At most this many parameters take the byte path (a signed request has four to six).
    static let maxByteParams = 16

    /// A parameter, decoded into the scratch buffer: its key (lower-cased) and value there.
    struct ByteParam {
        var key: Int
        var keyCount: Int
        var value: Int
        var valueCount: Int
    }

    /// The key when the request is signed right and its decoded query is all ASCII (then the
    /// string path's UTF-8 repair and Unicode lower-casing cannot arise); nil otherwise,
    /// without saying why.
    package static func accepted(
        method: String, path: String, rawQuery: Substring?, body: [UInt8],
        now: Int, secretsFor: (String) -> [String]
    ) -> String? {
        guard let q = rawQuery, !q.isEmpty else { return nil }
        let r = q.utf8.withContiguousStorageIfAvailable { b -> String? in
            let query = UnsafeRawBufferPointer(b)
            // Decoding never lengthens a parameter.
            return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: query.count) { scratch in
                withUnsafeTemporaryAllocation(of: ByteParam.self, capacity: maxByteParams) { params in
                    guard let n = decodeParams(query, scratch.baseAddress!, params.baseAddress!) else { return nil }
                    return accepted(
                        method: method, path: path, text: UnsafeRawBufferPointer(scratch),
                        params: UnsafeBufferPointer(rebasing: params[0..<n]), body: body, now: now,
                        secretsFor: secretsFor)
                }
            }
        }
        return r ?? nil
    }

    /// Splits and decodes `query` as `Query.parse` does, keys lower-cased; the count of
    /// parameters, or nil when a decoded byte is from 0x80 or there are too many. Separators
    /// are found with memchr and a parameter without `%` or `+` is copied whole (a byte loop
    /// cost about 5,000 instructions for a signed request's query).
    static func decodeParams(
        _ query: UnsafeRawBufferPointer, _ scratch: UnsafeMutablePointer<UInt8>,
        _ params: UnsafeMutablePointer<ByteParam>
    ) -> Int? {
        let base = query.baseAddress!
        let n = query.count
        func find(_ c: UInt8, _ from: Int, _ to: Int) -> Int {
            guard from < to, let p = memchr(base + from, Int32(c), to - from) else { return to }
            return base.distance(to: UnsafeRawPointer(p))
        }
        var written = 0
        var count = 0
        var start = 0
        while start <= n {
            let end = find(UInt8(ascii: "&"), start, n)
            if end > start {
                guard count < maxByteParams else { return nil }
                let eq = find(UInt8(ascii: "="), start, end)
                let key = written
                guard decode(query, start, eq, lower: true, into: scratch, at: &written) else { return nil }
                let value = written
                if eq < end {
                    guard decode(query, eq + 1, end, lower: false, into: scratch, at: &written) else { return nil }
                }
                params[count] = ByteParam(key: key, keyCount: value - key, value: value, valueCount: written - value)
                count += 1
            }
            start = end + 1
        }
        return count
    }

    /// `Query.decode` of `query[from..<to]` (`+` a space, `%XX` a byte, a malformed escape
    /// kept), A–Z lower-cased when `lower`; false at a byte from 0x80.
    static func decode(
        _ query: UnsafeRawBufferPointer, _ from: Int, _ to: Int, lower: Bool,
        into out: UnsafeMutablePointer<UInt8>, at written: inout Int
    ) -> Bool {
        let count = to - from
        guard count > 0 else { return true }
        let src = query.baseAddress! + from
        if memchr(src, 0x25, count) == nil, memchr(src, 0x2B, count) == nil {  // no % or +
            if lower {
                var high: UInt8 = 0
                for i in 0..<count {
                    let c = src.load(fromByteOffset: i, as: UInt8.self)
                    high |= c
                    out[written + i] = c &- 65 < 26 ? c | 0x20 : c
                }
                written += count
                return high < 0x80
            }
            memcpy(out + written, src, count)
            // ASCII: no byte with its top bit set, eight at a time.
            var high: UInt64 = 0
            var i = 0
            while i + 8 <= count {
                high |= UnsafeRawPointer(out + written + i).loadUnaligned(as: UInt64.self)
                i += 8
            }
            while i < count {
                high |= UInt64(out[written + i])
                i += 1
            }
            written += count
            return high & 0x8080_8080_8080_8080 == 0
        }
        var i = from
        while i < to {
            var c = query[i]
            if c == UInt8(ascii: "+") {
                c = 0x20
            } else if c == UInt8(ascii: "%"), i + 2 < to, let h = Query.hex(query[i + 1]),
                let l = Query.hex(query[i + 2])
            {
                c = h << 4 | l
                i += 2
            }
            guard c < 0x80 else { return false }
            if lower && c >= 65 && c <= 90 { c |= 0x20 }
            out[written] = c
            written += 1
            i += 1
        }
        return true
    }

    /// The checks of `verify`, on decoded parameters.
    static func accepted(
        method: String, path: String, text: UnsafeRawBufferPointer, params: UnsafeBufferPointer<ByteParam>,
        body: [UInt8], now: Int, secretsFor: (String) -> [String]
    ) -> String? {
        func bytes(_ start: Int, _ count: Int) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(rebasing: text[start..<(start + count)])
        }
        func keyIs(_ p: ByteParam, _ name: StaticString) -> Bool {
            p.keyCount == name.utf8CodeUnitCount && memcmp(text.baseAddress! + p.key, name.utf8Start, p.keyCount) == 0
        }
        // The last of a repeated parameter counts, as in `verify`.
        var key: ByteParam?, ts: ByteParam?, sig: ByteParam?, version: ByteParam?, md5: ByteParam?
        for p in params {
            if keyIs(p, "auth_key") {
                key = p
            } else if keyIs(p, "auth_timestamp") {
                ts = p
            } else if keyIs(p, "auth_signature") {
                sig = p
            } else if keyIs(p, "auth_version") {
                version = p
            } else if keyIs(p, "body_md5") {
                md5 = p
            }
        }
        guard let key, let ts, let sig, let version else { return nil }
        guard version.valueCount == 3, memcmp(text.baseAddress! + version.value, "1.0", 3) == 0 else { return nil }
        // Digits only, at most 18 (no overflow); anything else is left to the string path.
        guard ts.valueCount > 0, ts.valueCount <= 18 else { return nil }
        var t = 0
        for c in bytes(ts.value, ts.valueCount) {
            guard c >= 48 && c <= 57 else { return nil }
            t = t * 10 + Int(c - 48)
        }
        // The string path's order: the key's secrets, the clock, the body's digest.
        let keyString = String(decoding: bytes(key.value, key.valueCount), as: UTF8.self)
        let secrets = secretsFor(keyString)
        guard !secrets.isEmpty else { return nil }
        guard (now - t).magnitude <= UInt(maxClockSkew) else { return nil }
        if let md5 {
            guard hexEqual(Digest.md5(body), bytes(md5.value, md5.valueCount)) else { return nil }
        } else if !body.isEmpty {
            return nil
        }
        return withSignedText(method: method, path: path, text: text, params: params) { signed in
            let sent = bytes(sig.value, sig.valueCount)
            for s in secrets {
                var mac = HMACSHA256(key: s)
                mac.update(signed)
                if hexEqual(mac.finish(), sent) { return keyString }
            }
            return nil
        }
    }

    /// `bytesToSign` of decoded parameters: `METHOD\nPATH\n` and the parameters but
    /// `auth_signature`, sorted by key bytes (stable), `k=v` joined by `&`.
    static func withSignedText<R>(
        method: String, path: String, text: UnsafeRawBufferPointer, params: UnsafeBufferPointer<ByteParam>,
        _ use: (UnsafeRawBufferPointer) -> R
    ) -> R {
        withUnsafeTemporaryAllocation(of: Int.self, capacity: params.count) { order in
            func precedes(_ a: ByteParam, _ b: ByteParam) -> Bool {
                let c = memcmp(text.baseAddress! + a.key, text.baseAddress! + b.key, min(a.keyCount, b.keyCount))
                return c != 0 ? c < 0 : a.keyCount < b.keyCount
            }
            var kept = 0
            var size = method.utf8.count + path.utf8.count + 2
            for (i, q) in params.enumerated() {
                if q.keyCount == 14 && memcmp(text.baseAddress! + q.key, "auth_signature", 14) == 0 { continue }
                // Insertion into the sorted prefix, after equal keys.
                var j = kept
                while j > 0 && precedes(q, params[order[j - 1]]) {
                    order[j] = order[j - 1]
                    j -= 1
                }
                order[j] = i
                kept += 1
                size += q.keyCount + q.valueCount + 2
            }
            return withUnsafeTemporaryAllocation(byteCount: size, alignment: 1) { out in
                var w = SizedJSON.Writer(base: out.baseAddress!)
                w.raw(method)
                w.byte(0x0A)
                w.raw(path)
                w.byte(0x0A)
                for k in 0..<kept {
                    let q = params[order[k]]
                    if k > 0 { w.byte(UInt8(ascii: "&")) }
                    w.bytes(UnsafeRawBufferPointer(rebasing: text[q.key..<(q.key + q.keyCount)]))
                    w.byte(UInt8(ascii: "="))
                    w.bytes(UnsafeRawBufferPointer(rebasing: text[q.value..<(q.value + q.valueCount)]))
                }
                precondition(w.count <= size, "withSignedText: \(w.count) bytes written into \(size)")
                return use(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(out)[0..<w.count]))
            }
        }
    }
}
