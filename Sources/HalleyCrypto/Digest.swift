import COpenSSL

#if canImport(Glibc)
import Glibc
#endif

/// Digests and HMAC-SHA256 from OpenSSL's low-level functions (`SHA256_Init` & co., through
/// the shim's wrappers): the context is a struct on the stack. Through EVP, every digest
/// allocated a context, an HMAC copied its key's states into new allocations, and each was
/// freed and cleansed again: that set-up was most of libcrypto's 5% of a signed publish's CPU
/// (perf), where SHA-256 itself (SHA-NI) is a few hundred cycles per block.
public enum Digest {
    /// The `count` bytes `final` writes, copied out of temporary memory into an array made by
    /// specialized code (`Array(repeating:count:)` allocates through the standard library's
    /// unspecialized code, a generic metadata lookup per call: see HalleyCore's
    /// `[UInt8](writing:)`).
    @inline(__always)
    static func digestBytes(_ count: Int, _ final: (UnsafeMutablePointer<UInt8>) -> Void) -> [UInt8] {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: count) { tmp in
            final(tmp.baseAddress!)
            return Array(UnsafeBufferPointer(tmp))
        }
    }

    public static func sha1(_ data: UnsafeRawBufferPointer) -> [UInt8] {
        var c = SHA_CTX()
        halley_sha1_init(&c)
        if data.count > 0 { halley_sha1_update(&c, data.baseAddress, data.count) }
        return Digest.digestBytes(20) { halley_sha1_final($0, &c) }
    }

    public static func sha1(_ data: [UInt8]) -> [UInt8] { data.withUnsafeBytes { sha1($0) } }

    public static func md5(_ data: UnsafeRawBufferPointer) -> [UInt8] {
        var c = MD5_CTX()
        halley_md5_init(&c)
        if data.count > 0 { halley_md5_update(&c, data.baseAddress, data.count) }
        return Digest.digestBytes(16) { halley_md5_final($0, &c) }
    }

    public static func md5(_ data: [UInt8]) -> [UInt8] { data.withUnsafeBytes { md5($0) } }

    public static func sha256(_ data: UnsafeRawBufferPointer) -> [UInt8] {
        var c = SHA256_CTX()
        halley_sha256_init(&c)
        if data.count > 0 { halley_sha256_update(&c, data.baseAddress, data.count) }
        return Digest.digestBytes(32) { halley_sha256_final($0, &c) }
    }

    /// HMAC-SHA256 (RFC 2104): H((K ^ opad) || H((K ^ ipad) || data)). The hash states after
    /// each padded key's block are made once per key and copied per call (`HMACKeys`).
    public static func hmacSHA256(key: [UInt8], data: UnsafeRawBufferPointer) -> [UInt8] {
        var mac = key.withUnsafeBytes { HMACSHA256(key: $0) }
        mac.update(data)
        return mac.finish()
    }

    public static func hmacSHA256(key: [UInt8], data: [UInt8]) -> [UInt8] {
        data.withUnsafeBytes { hmacSHA256(key: key, data: $0) }
    }

    /// The same under a key given as a string's UTF-8 (an app's secret), not copied into an
    /// array first.
    public static func hmacSHA256(key: String, data: [UInt8]) -> [UInt8] {
        var mac = HMACSHA256(key: key)
        data.withUnsafeBytes { mac.update($0) }
        return mac.finish()
    }

    /// Compares in time that depends only on the lengths, not on where the bytes differ: any
    /// two byte collections (a header's bytes, a token's), without copies.
    @inlinable
    public static func constantTimeEqual<A: Collection<UInt8>, B: Collection<UInt8>>(bytes a: A, _ b: B) -> Bool {
        guard a.count == b.count else { return false }
        // Over their storage when both have one (a native string's UTF-8, an array, a slice):
        // a string's UTF-8 view walked by its iterator cost about 20 instructions a byte.
        let stored = a.withContiguousStorageIfAvailable { x in
            b.withContiguousStorageIfAvailable { y in
                var diff: UInt8 = 0
                for i in 0..<x.count { diff |= x[i] ^ y[i] }
                return diff == 0
            }
        }
        if let same = stored ?? nil { return same }
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

/// HMAC-SHA256 fed in pieces (`Digest.hmacSHA256` feeds it one).
public struct HMACSHA256 {
    var inner: SHA256_CTX
    var outer: SHA256_CTX

    public init(key: UnsafeRawBufferPointer) {
        (inner, outer) = HMACKeys.shared.states(key)
    }

    public init(key: String) {
        var k = key  // `withUTF8` is mutating; a native string is not copied
        (inner, outer) = k.withUTF8 { HMACKeys.shared.states(UnsafeRawBufferPointer($0)) }
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        if bytes.count > 0 { halley_sha256_update(&inner, bytes.baseAddress, bytes.count) }
    }

    /// The MAC (32 bytes); the value is spent.
    public mutating func finish() -> [UInt8] {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 32) { mid in  // the inner digest
            halley_sha256_final(mid.baseAddress, &inner)
            halley_sha256_update(&outer, mid.baseAddress, 32)
        }
        return Digest.digestBytes(32) { halley_sha256_final($0, &outer) }
    }
}

/// Per HMAC key, SHA-256's state after the block `K ^ ipad` and after `K ^ opad` (RFC 2104),
/// made on first use and copied (a struct) into each call. At most `capacity` keys (apps'
/// secrets, rotated ones, webhook secrets), found by a scan that compares lengths first; a new
/// key past that takes the place of the oldest (a client naming many apps' keys costs a
/// state's set-up per call, as before the table, not a cleared table).
final class HMACKeys: @unchecked Sendable {  // @unchecked: every field is reached under `lock`
    static let shared = HMACKeys()
    static let capacity = 64

    struct Entry {
        let key: [UInt8]
        let inner: SHA256_CTX
        let outer: SHA256_CTX
    }

    // A pthread mutex must not move: allocated once, never freed (one table per process).
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var entries: [Entry] = []
    /// The entry replaced next once the table is full (oldest first).
    private var nextVictim = 0

    init() { pthread_mutex_init(lock, nil) }

    /// How many keys are held.
    var count: Int {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return entries.count
    }

    /// The key's two states; a key not held yet has them made outside the lock.
    func states(_ key: UnsafeRawBufferPointer) -> (SHA256_CTX, SHA256_CTX) {
        pthread_mutex_lock(lock)
        if let i = index(of: key) {
            defer { pthread_mutex_unlock(lock) }
            return (entries[i].inner, entries[i].outer)
        }
        pthread_mutex_unlock(lock)
        let made = Self.make(key)
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        if index(of: key) == nil {  // not made by another thread meanwhile
            if entries.count < Self.capacity {
                entries.append(made)
            } else {
                entries[nextVictim] = made
                nextVictim = (nextVictim + 1) % Self.capacity
            }
        }
        return (made.inner, made.outer)
    }

    /// Under the lock. Compares the entries in place: a loop over `entries` copied each
    /// 240-byte entry out (about 500 instructions per signed request with one key).
    private func index(of key: UnsafeRawBufferPointer) -> Int? {
        entries.withUnsafeBufferPointer { es in
            for i in es.indices where es[i].key.count == key.count {
                let same = es[i].key.withUnsafeBytes { k in
                    key.count == 0 || memcmp(k.baseAddress!, key.baseAddress!, key.count) == 0
                }
                if same { return i }
            }
            return nil
        }
    }

    static func make(_ key: UnsafeRawBufferPointer) -> Entry {
        var k = key.count > 64 ? Digest.sha256(key) : Array(key)
        k.append(contentsOf: repeatElement(0, count: 64 - k.count))
        let ipad = k.map { $0 ^ 0x36 }
        let opad = k.map { $0 ^ 0x5c }
        var i = SHA256_CTX()
        var o = SHA256_CTX()
        halley_sha256_init(&i)
        halley_sha256_update(&i, ipad, 64)
        halley_sha256_init(&o)
        halley_sha256_update(&o, opad, 64)
        return Entry(key: Array(key), inner: i, outer: o)
    }
}
