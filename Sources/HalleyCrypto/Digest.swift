import COpenSSL

/// One-shot digests and MACs from OpenSSL 3 (EVP; the old one-shot functions are deprecated).
public enum Digest {
    public static func sha1(_ data: UnsafeRawBufferPointer) -> [UInt8] {
        digest(data, EVP_sha1(), 20)
    }

    public static func sha1(_ data: [UInt8]) -> [UInt8] { data.withUnsafeBytes { sha1($0) } }

    public static func md5(_ data: UnsafeRawBufferPointer) -> [UInt8] {
        digest(data, EVP_md5(), 16)
    }

    public static func md5(_ data: [UInt8]) -> [UInt8] { data.withUnsafeBytes { md5($0) } }

    static func digest(_ data: UnsafeRawBufferPointer, _ md: OpaquePointer?, _ size: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        var len: UInt32 = 0
        let rc = out.withUnsafeMutableBufferPointer { o in
            EVP_Digest(data.baseAddress ?? UnsafeRawPointer(bitPattern: 1), data.count, o.baseAddress, &len, md, nil)
        }
        precondition(rc == 1 && Int(len) == size, "EVP_Digest failed")
        return out
    }

    public static func hmacSHA256(key: [UInt8], data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        key.withUnsafeBytes { k in
            data.withUnsafeBytes { d in
                out.withUnsafeMutableBufferPointer { o in
                    _ = HMAC(EVP_sha256(), k.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(k.count),
                             d.baseAddress?.assumingMemoryBound(to: UInt8.self), d.count, o.baseAddress, &len)
                }
            }
        }
        precondition(len == 32, "HMAC failed")
        return out
    }

    /// Compares in time that depends only on the lengths, not on where the bytes differ.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
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
