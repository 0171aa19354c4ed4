import HalleyCore
import HalleyCrypto

/// Authentication of the Pusher HTTP API ("HTTP API reference", "Authentication"): the query
/// carries `auth_key`, `auth_timestamp`, `auth_version=1.0`, `body_md5` (when there is a
/// body) and `auth_signature`, the hex HMAC-SHA256 under the app secret of
///
///     METHOD \n PATH \n key1=value1&key2=value2…
///
/// with every other parameter, keys lowercased and sorted, values as decoded (not
/// re-encoded). Any Pusher server SDK produces exactly this.
public enum PusherSignature {
    /// Seconds a signed request's timestamp may differ from our clock. Pusher: 600.
    public static let maxClockSkew = 600

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case missing(String)
        case unknownKey
        case badVersion
        case expired(skew: Int)
        case bodyMD5Mismatch
        case badSignature

        public var description: String {
            switch self {
            case .missing(let p): return "missing \(p)"
            case .unknownKey: return "unknown auth_key"
            case .badVersion: return "auth_version must be 1.0"
            case .expired(let s):
                return "auth_timestamp is \(s) s away from the server clock (limit \(PusherSignature.maxClockSkew) s)"
            case .bodyMD5Mismatch: return "body_md5 does not match the body"
            case .badSignature: return "invalid auth_signature"
            }
        }
    }

    /// The text that is signed.
    public static func stringToSign(method: String, path: String, query: [(String, String)]) -> String {
        String(decoding: bytesToSign(method: method, path: path, query: query), as: UTF8.self)
    }

    /// `key` in ASCII lower case (the same string when it has no upper-case letter: no copy).
    @inline(__always) static func lower(_ key: String) -> String {
        key.utf8.contains(where: { $0 >= 65 && $0 <= 90 }) ? key.lowercased() : key
    }

    /// The signed text as bytes, sized first and written once (this runs for every API
    /// request: appending UTF-8 views and sorting with the collection algorithms cost about
    /// 7,000 instructions).
    static func bytesToSign(method: String, path: String, query: [(String, String)]) -> [UInt8] {
        // Structs, not tuples: an array of tuples was destroyed through the runtime's generic
        // tuple witnesses.
        struct Param {
            let key: String
            let value: String
        }
        var params: [Param] = []
        params.reserveCapacity(query.count)
        var size = method.utf8.count + path.utf8.count + 2
        for (k, v) in query {
            let lk = lower(k)
            if lk == "auth_signature" { continue }
            params.append(Param(key: lk, value: v))
            size += lk.utf8.count + v.utf8.count + 2
        }
        // Sorted by key bytes (Pusher sorts keys as byte strings); stable for equal keys (an
        // insertion sort: a request has four to six).
        var i = 1
        while i < params.count {
            var j = i
            while j > 0 && bytesPrecede(params[j].key, params[j - 1].key) {
                params.swapAt(j, j - 1)
                j -= 1
            }
            i += 1
        }
        return [UInt8](writing: size) { base in
            var w = SizedJSON.Writer(base: base)
            w.raw(method)
            w.byte(0x0A)
            w.raw(path)
            w.byte(0x0A)
            for (k, p) in params.enumerated() {
                if k > 0 { w.byte(UInt8(ascii: "&")) }
                w.raw(p.key)
                w.byte(UInt8(ascii: "="))
                w.raw(p.value)
            }
            precondition(w.count <= size, "bytesToSign: \(w.count) bytes written into \(size)")
            return w.count
        }
    }

    /// Whether `a`'s UTF-8 bytes sort before `b`'s.
    static func bytesPrecede(_ a: String, _ b: String) -> Bool {
        var a = a
        var b = b
        return a.withUTF8 { x in
            b.withUTF8 { y in
                let n = min(x.count, y.count)
                var k = 0
                while k < n && x[k] == y[k] { k += 1 }
                return k < n ? x[k] < y[k] : x.count < y.count
            }
        }
    }

    public static func sign(secret: String, method: String, path: String, query: [(String, String)]) -> String {
        Digest.hex(
            Digest.hmacSHA256(key: secret, data: bytesToSign(method: method, path: path, query: query)))
    }

    /// Checks a request; `secretsFor` maps an `auth_key` to the secrets its app accepts (the
    /// current one, and the previous one while a rotation overlaps; none: unknown key).
    /// Returns the key.
    public static func verify(
        method: String, path: String, query: [(String, String)], body: [UInt8],
        now: Int, secretsFor: (String) -> [String]
    ) throws(Failure) -> String {
        var key: String?, ts: String?, sig: String?, version: String?, md5: String?
        for (k, v) in query {
            switch lower(k) {
            case "auth_key": key = v
            case "auth_timestamp": ts = v
            case "auth_signature": sig = v
            case "auth_version": version = v
            case "body_md5": md5 = v
            default: break
            }
        }
        guard let key = key else { throw .missing("auth_key") }
        guard let ts = ts else { throw .missing("auth_timestamp") }
        guard let sig = sig else { throw .missing("auth_signature") }
        guard version == "1.0" else { throw version == nil ? .missing("auth_version") : .badVersion }
        let secrets = secretsFor(key)
        guard !secrets.isEmpty else { throw .unknownKey }
        // Parsed and compared without overflow: the timestamp is attacker-chosen.
        guard let t = Int(ts) else { throw .expired(skew: Int.max) }
        let (diff, overflow) = now.subtractingReportingOverflow(t)
        guard !overflow, diff.magnitude <= UInt(maxClockSkew) else {
            throw .expired(skew: overflow ? Int.max : Int(clamping: diff.magnitude))
        }
        if let md5 = md5 {
            guard hexEqual(Digest.md5(body), md5) else { throw .bodyMD5Mismatch }
        } else if !body.isEmpty {
            throw .missing("body_md5")
        }
        let data = bytesToSign(method: method, path: path, query: query)
        guard secrets.contains(where: { hexEqual(Digest.hmacSHA256(key: $0, data: data), sig) }) else {
            throw .badSignature
        }
        return key
    }

    /// Whether `hex` (either case) spells `bytes`, in time that depends only on the lengths.
    static func hexEqual(_ bytes: [UInt8], _ hex: String) -> Bool {
        var hex = hex
        return hex.withUTF8 { hexEqual(bytes, UnsafeRawBufferPointer($0)) }
    }

    static func hexEqual(_ bytes: [UInt8], _ h: UnsafeRawBufferPointer) -> Bool {
        guard h.count == bytes.count * 2 else { return false }
        @inline(__always) func nibble(_ c: UInt8) -> UInt8 {
            // Non-hex characters give 0xFF, which never matches a nibble.
            let d = c &- 48
            let l = (c | 0x20) &- 87
            return d < 10 ? d : (l >= 10 && l < 16 ? l : 0xFF)
        }
        var diff: UInt8 = 0
        for i in 0..<bytes.count {
            let b = bytes[i]
            diff |= (nibble(h[2 * i]) ^ (b >> 4)) | (nibble(h[2 * i + 1]) ^ (b & 15))
        }
        return diff == 0
    }
}
