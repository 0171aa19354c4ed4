import HalleyCore
import HalleyHTTP
#if canImport(Glibc)
import Glibc
#endif

/// An open file to send with `sendfile`; closed when the last response using it is done.
public final class FileRef {
    public let fd: Int32
    public init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

/// A response as a handler builds it. The server adds the status line, `Date`,
/// `Content-Length` and `Connection`.
public struct HTTPResponse {
    public enum Body {
        case empty
        case bytes([UInt8])
        case shared(SharedBytes)
        case file(FileRef, offset: Int, length: Int)

        var length: Int {
            switch self {
            case .empty: return 0
            case .bytes(let b): return b.count
            case .shared(let s): return s.count
            case .file(_, _, let n): return n
            }
        }
    }

    public var status: Int
    public var headers: [(String, String)]
    public var body: Body
    /// Header lines already encoded ("Name: value\r\n" each), shared by many responses: the
    /// static file cache keeps one per file.
    public var encodedHeaders: SharedBytes?
    /// Close the connection after this response.
    public var close = false

    public init(status: Int, headers: [(String, String)] = [], body: Body = .empty) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func text(_ status: Int, _ text: String, headers: [(String, String)] = []) -> HTTPResponse {
        HTTPResponse(
            status: status, headers: [("Content-Type", "text/plain; charset=utf-8")] + headers,
            body: .bytes(Array(text.utf8)))
    }
}

/// A request as handlers see it: the head, the whole body, and the path parameters the route
/// matched.
public struct HTTPRequest {
    public let head: HTTPRequestHead
    public let body: [UInt8]
    public var parameters: RouteParameters

    public var method: HTTPMethod { head.method }
    public var path: Substring { head.path }
}
