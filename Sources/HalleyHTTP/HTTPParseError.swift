/// Why a request was refused. Each case maps to one status code; after any of them the
/// server answers that status with `Connection: close` and closes.
public enum HTTPParseError: Error, Sendable, Equatable {
    /// Malformed syntax or a framing conflict (RFC 9112 §11: smuggling cases). 400.
    case badRequest(String)
    /// The request line is longer than `maxRequestLineBytes`. 414.
    case uriTooLong
    /// The head is longer than `maxHeaderBytes` or has more than `maxHeaderCount` fields. 431.
    case headersTooLarge
    /// The body is larger than `maxBodyBytes`. 413.
    case contentTooLarge
    /// A Transfer-Encoding other than `chunked`. 501.
    case notImplemented(String)
    /// An HTTP version other than 1.0 and 1.1. 505.
    case versionNotSupported
    /// An `Expect` other than `100-continue`. 417.
    case expectationFailed

    public var status: Int {
        switch self {
        case .badRequest: return 400
        case .uriTooLong: return 414
        case .headersTooLarge: return 431
        case .contentTooLarge: return 413
        case .notImplemented: return 501
        case .versionNotSupported: return 505
        case .expectationFailed: return 417
        }
    }

    /// A short reason for the log line.
    public var reason: String {
        switch self {
        case .badRequest(let why): return "bad request: \(why)"
        case .uriTooLong: return "request line too long"
        case .headersTooLarge: return "header fields too large"
        case .contentTooLarge: return "body too large"
        case .notImplemented(let what): return "not implemented: \(what)"
        case .versionNotSupported: return "HTTP version not supported"
        case .expectationFailed: return "unsupported Expect"
        }
    }

    /// The limit-breach kind for metrics, or nil for plain syntax errors.
    public var limitKind: String? {
        switch self {
        case .uriTooLong: return "request_line"
        case .headersTooLarge: return "headers"
        case .contentTooLarge: return "body"
        default: return nil
        }
    }
}
