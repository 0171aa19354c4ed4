#if canImport(Glibc)
import Glibc
#endif

/// A client's IP address in 16 bytes: IPv6 as is, IPv4 as `::ffff:a.b.c.d`, so both kinds
/// share one table and one comparison. What the per-address limits count by.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    public let hi: UInt64
    public let lo: UInt64

    public init(hi: UInt64, lo: UInt64) {
        self.hi = hi
        self.lo = lo
    }

    /// `::ffff:a.b.c.d`; `v4` in host byte order.
    public init(v4: UInt32) {
        hi = 0
        lo = 0x0000_FFFF_0000_0000 | UInt64(v4)
    }

    /// Unknown (a socket whose peer could not be read): counted as one address of its own.
    public static let unspecified = IPAddress(hi: 0, lo: 0)

    public var isV4: Bool { hi == 0 && lo >> 32 == 0xFFFF }

    /// From what `accept4` or `getpeername` filled in; nil for other families (unix sockets).
    public init?(sockaddr storage: UnsafeRawPointer, length: Int) {
        let family = storage.load(as: sa_family_t.self)
        if Int32(family) == AF_INET, length >= MemoryLayout<sockaddr_in>.size {
            let a = storage.load(as: sockaddr_in.self)
            self.init(v4: UInt32(bigEndian: a.sin_addr.s_addr))
        } else if Int32(family) == AF_INET6, length >= MemoryLayout<sockaddr_in6>.size {
            var a = storage.load(as: sockaddr_in6.self)
            let (h, l) = withUnsafeBytes(of: &a.sin6_addr) { b in
                (
                    UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                    UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                )
            }
            self.init(hi: h, lo: l)
        } else {
            return nil
        }
    }

    /// Parses `1.2.3.4`, `::1`, `2001:db8::5`, `::ffff:1.2.3.4` (and `[…]` around IPv6, as
    /// `Forwarded` writes it). No ports, no zone ids.
    public init?(_ text: Substring) {
        var s = text
        if s.first == "[" && s.last == "]" { s = s.dropFirst().dropLast() }
        if s.contains(":") {
            var buf = in6_addr()
            let ok = String(s).withCString { inet_pton(AF_INET6, $0, &buf) } == 1
            guard ok else { return nil }
            let (h, l) = withUnsafeBytes(of: &buf) { b in
                (
                    UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                    UInt64(bigEndian: b.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                )
            }
            self.init(hi: h, lo: l)
        } else {
            var buf = in_addr()
            guard String(s).withCString({ inet_pton(AF_INET, $0, &buf) }) == 1 else { return nil }
            self.init(v4: UInt32(bigEndian: buf.s_addr))
        }
    }

    public var description: String {
        if isV4 {
            let v = UInt32(truncatingIfNeeded: lo)
            return "\(v >> 24).\(v >> 16 & 255).\(v >> 8 & 255).\(v & 255)"
        }
        var a = in6_addr()
        withUnsafeMutableBytes(of: &a) { b in
            b.storeBytes(of: hi.bigEndian, toByteOffset: 0, as: UInt64.self)
            b.storeBytes(of: lo.bigEndian, toByteOffset: 8, as: UInt64.self)
        }
        var out = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(AF_INET6, &a, &out, socklen_t(out.count)) != nil else { return "?" }
        return String(decoding: out.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// An address range, `10.0.0.0/8`, `fd00::/8`, or one address (`127.0.0.1`).
public struct IPNetwork: Sendable, Equatable, CustomStringConvertible {
    public let base: IPAddress
    /// Prefix length over the 128-bit form (an IPv4 /8 is /104 here).
    public let bits: Int
    let text: String

    public init?(_ text: Substring) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let a = IPAddress(parts[0]) else { return nil }
        var bits = 128
        if parts.count == 2 {
            guard let n = Int(parts[1]), n >= 0, n <= (a.isV4 ? 32 : 128) else { return nil }
            bits = a.isV4 ? 96 + n : n
        }
        self.bits = bits
        self.text = String(text)
        let (h, l) = IPNetwork.mask(bits)
        base = IPAddress(hi: a.hi & h, lo: a.lo & l)
    }

    static func mask(_ bits: Int) -> (UInt64, UInt64) {
        let h: UInt64 = bits >= 64 ? .max : (bits == 0 ? 0 : ~UInt64(0) << (64 - bits))
        let l: UInt64 = bits <= 64 ? 0 : (bits == 128 ? .max : ~UInt64(0) << (128 - bits))
        return (h, l)
    }

    public func contains(_ a: IPAddress) -> Bool {
        let (h, l) = IPNetwork.mask(bits)
        return a.hi & h == base.hi && a.lo & l == base.lo
    }

    public var description: String { text }
}
