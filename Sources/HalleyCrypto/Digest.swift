import COpenSSL

#if canImport(Glibc)
import Glibc
#endif

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
    /// The hash states after each padded key's block are made once per key and copied per call
    /// (`HMACKeys`): a signed publish or a private-channel auth no longer sets up four
    /// digests and three key arrays each time.
    public static func hmacSHA256(key: [UInt8], data: UnsafeRawBufferPointer) -> [UInt8] {
        let inner = EVP_MD_CTX_new()
        let outer = EVP_MD_CTX_new()
        defer {
            EVP_MD_CTX_free(inner)
            EVP_MD_CTX_free(outer)
        }
        var ok = HMACKeys.shared.start(key: key, inner: inner, outer: outer)
        if data.count > 0 { ok = ok && EVP_DigestUpdate(inner, data.baseAddress, data.count) == 1 }
        var mid: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)  // the inner digest, 32 bytes
        var len: UInt32 = 0
        ok =
            ok
            && withUnsafeMutableBytes(of: &mid) { m in
                EVP_DigestFinal_ex(inner, m.baseAddress!.assumingMemoryBound(to: UInt8.self), &len) == 1
                    && EVP_DigestUpdate(outer, m.baseAddress, 32) == 1
            }
        var out = [UInt8](repeating: 0, count: 32)
        ok = ok && out.withUnsafeMutableBufferPointer { EVP_DigestFinal_ex(outer, $0.baseAddress, &len) } == 1
        precondition(ok && len == 32, "HMAC-SHA256 failed")
        return out
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

/// Per HMAC key, SHA-256 after the block `K ^ ipad` and after `K ^ opad` (RFC 2104), made on
/// first use and copied into each call's contexts. The copies are made under the lock, so no
/// state is read by two threads at once. At most `capacity` keys (apps' secrets, rotated ones,
/// webhook secrets); a new key past that takes the place of one held (a client naming many
/// apps' keys costs a state's set-up per call, as before the table, not a cleared table).
final class HMACKeys: @unchecked Sendable {  // @unchecked: every field is reached under `lock`
    static let shared = HMACKeys()
    static let capacity = 64

    // A pthread mutex must not move: allocated once, never freed (one table per process).
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var states: [Key: (inner: OpaquePointer, outer: OpaquePointer)] = [:]

    /// A key's bytes, hashed at once (an array of bytes hashes them one at a time).
    struct Key: Hashable {
        let bytes: [UInt8]
        func hash(into h: inout Hasher) { bytes.withUnsafeBytes { h.combine(bytes: $0) } }
    }

    init() { pthread_mutex_init(lock, nil) }

    /// How many keys are held.
    var count: Int {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return states.count
    }

    /// `inner` and `outer` set to the key's two states; false if OpenSSL failed. A key not
    /// held yet has its states made outside the lock.
    func start(key: [UInt8], inner: OpaquePointer?, outer: OpaquePointer?) -> Bool {
        guard let inner, let outer else { return false }
        if let ok = copyIfHeld(key, inner, outer) { return ok }
        guard let made = Self.make(key) else { return false }
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        var s = made
        if let found = states[Key(bytes: key)] {  // made by another thread meanwhile
            EVP_MD_CTX_free(made.inner)
            EVP_MD_CTX_free(made.outer)
            s = found
        } else {
            if states.count >= Self.capacity, let victim = states.first {
                states[victim.key] = nil
                EVP_MD_CTX_free(victim.value.inner)
                EVP_MD_CTX_free(victim.value.outer)
            }
            states[Key(bytes: key)] = made
        }
        return EVP_MD_CTX_copy_ex(inner, s.inner) == 1 && EVP_MD_CTX_copy_ex(outer, s.outer) == 1
    }

    /// nil when the key is not held.
    private func copyIfHeld(_ key: [UInt8], _ inner: OpaquePointer, _ outer: OpaquePointer) -> Bool? {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        guard let s = states[Key(bytes: key)] else { return nil }
        return EVP_MD_CTX_copy_ex(inner, s.inner) == 1 && EVP_MD_CTX_copy_ex(outer, s.outer) == 1
    }

    static func make(_ key: [UInt8]) -> (inner: OpaquePointer, outer: OpaquePointer)? {
        var k = key.count > 64 ? key.withUnsafeBytes { Digest.sha256($0) } : key
        k.append(contentsOf: repeatElement(0, count: 64 - k.count))
        guard let i = EVP_MD_CTX_new() else { return nil }
        guard let o = EVP_MD_CTX_new() else {
            EVP_MD_CTX_free(i)
            return nil
        }
        let ipad = k.map { $0 ^ 0x36 }
        let opad = k.map { $0 ^ 0x5c }
        let ok =
            EVP_DigestInit_ex(i, Digest.sha256MD, nil) == 1 && EVP_DigestUpdate(i, ipad, 64) == 1
            && EVP_DigestInit_ex(o, Digest.sha256MD, nil) == 1 && EVP_DigestUpdate(o, opad, 64) == 1
        guard ok else {
            EVP_MD_CTX_free(i)
            EVP_MD_CTX_free(o)
            return nil
        }
        return (i, o)
    }
}
