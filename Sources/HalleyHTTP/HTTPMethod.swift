/// A request method. The common ones are cases so that routing compares integers.
public enum HTTPMethod: Sendable, Hashable, CustomStringConvertible {
    case get, head, post, put, delete, options, patch, connect, trace
    case other(String)

    init(bytes: UnsafeRawBufferPointer) {
        switch bytes.count {
        case 3:
            if Self.eq(bytes, "GET") { self = .get; return }
            if Self.eq(bytes, "PUT") { self = .put; return }
        case 4:
            if Self.eq(bytes, "HEAD") { self = .head; return }
            if Self.eq(bytes, "POST") { self = .post; return }
        case 5:
            if Self.eq(bytes, "PATCH") { self = .patch; return }
            if Self.eq(bytes, "TRACE") { self = .trace; return }
        case 6:
            if Self.eq(bytes, "DELETE") { self = .delete; return }
        case 7:
            if Self.eq(bytes, "OPTIONS") { self = .options; return }
            if Self.eq(bytes, "CONNECT") { self = .connect; return }
        default: break
        }
        self = .other(String(decoding: bytes, as: UTF8.self))
    }

    private static func eq(_ b: UnsafeRawBufferPointer, _ s: StaticString) -> Bool {
        memcmpEqual(b, UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    public var description: String {
        switch self {
        case .get: return "GET"
        case .head: return "HEAD"
        case .post: return "POST"
        case .put: return "PUT"
        case .delete: return "DELETE"
        case .options: return "OPTIONS"
        case .patch: return "PATCH"
        case .connect: return "CONNECT"
        case .trace: return "TRACE"
        case .other(let s): return s
        }
    }
}

@inline(__always)
func memcmpEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    guard a.count == b.count else { return false }
    for i in 0..<a.count where a[i] != b[i] { return false }
    return true
}
