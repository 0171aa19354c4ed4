import COpenSSL

/// One-shot digests and MACs from OpenSSL 3 (EVP; the old one-shot functions are deprecated).
public enum Digest {
    // Digests fetched once: OpenSSL 3's `EVP_sha256()` & co. make every call look the
    // implementation up again (an "implicit fetch": locks and a hash table per call).
    // nonisolated(unsafe): a fetched EVP_MD is immutable and may be used from any thread.
    nonisolated(unsafe) static let sha1MD = EVP_MD_fetch(nil, "SHA1", nil)
    nonisolated(unsafe) static let md5MD = EVP_MD_fetch(nil, "MD5", nil)
    nonisolated(unsafe) static let sha256MD = EVP_MD_fetch(nil, "SHA256", nil)

    public static func sha1(_ data: UnsafeRawBufferPointer) -> [UInt8] { digest([data], sha1MD, 20) }

    public static func sha1(_ data: [UInt8]) -> [UInt8] { data.withUnsafeBytes { sha1($0) } }

    public static func md5(_ data: UnsafeRawBufferPointer) -> [UInt8] { digest([data], md5MD, 16) }

    public static func md5(_ data: [UInt8]) -> [UInt8] { data.withUnsafeBytes { md5($0) } }

    public static func sha256(_ data: UnsafeRawBufferPointer) -> [UInt8] { digest([data], sha256MD, 32) }

    /// The digest of the concatenation of `parts`.
    static func digest(_ parts: [UnsafeRawBufferPointer], _ md: OpaquePointer?, _ size: Int) -> [UInt8] {
        let ctx = EVP_MD_CTX_new()
        defer { EVP_MD_CTX_free(ctx) }
        var ok = EVP_DigestInit_ex(ctx, md, nil) == 1
        for p in parts where p.count > 0 { ok = ok && EVP_DigestUpdate(ctx, p.baseAddress, p.count) == 1 }
        var out = [UInt8](repeating: 0, count: size)
        var len: UInt32 = 0
        ok = ok && out.withUnsafeMutableBufferPointer { EVP_DigestFinal_ex(ctx, $0.baseAddress, &len) } == 1
        precondition(ok && Int(len) == size, "EVP digest failed")
        return out
    }

    /// HMAC-SHA256 (RFC 2104) over the fetched SHA-256: H((K ^ opad) || H((K ^ ipad) || data)).
    public static func hmacSHA256(key: [UInt8], data: UnsafeRawBufferPointer) -> [UInt8] {
        var k = key.count > 64 ? key.withUnsafeBytes { sha256($0) } : key
        k.append(contentsOf: repeatElement(0, count: 64 - k.count))
        let ipad = k.map { $0 ^ 0x36 }
        let opad = k.map { $0 ^ 0x5c }
        let inner = ipad.withUnsafeBytes { i in digest([i, data], sha256MD, 32) }
        return opad.withUnsafeBytes { o in inner.withUnsafeBytes { digest([o, $0], sha256MD, 32) } }
    }

    public static func hmacSHA256(key: [UInt8], data: [UInt8]) -> [UInt8] {
        data.withUnsafeBytes { hmacSHA256(key: key, data: $0) }
    }

    /// Compares in time that depends only on the lengths, not on where the bytes differ: any
    /// two byte collections (a header's bytes, a token's), without copies.
    @inlinable
    public static func constantTimeEqual<A: Collection<UInt8>, B: Collection<UInt8>>(bytes a: A, _ b: B) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for (x, y) in zip(a, b) { diff |= x ^ y }
        return diff == 0
    }

    /// Compares in time that depends only on the lengths, not on where the bytes differ.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        constantTimeEqual(bytes: a, b)
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
