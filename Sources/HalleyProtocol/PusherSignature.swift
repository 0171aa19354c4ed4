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
            case .expired(let s): return "auth_timestamp is \(s) s away from the server clock (limit \(PusherSignature.maxClockSkew) s)"
            case .bodyMD5Mismatch: return "body_md5 does not match the body"
            case .badSignature: return "invalid auth_signature"
            }
        }
    }

    /// The text that is signed.
    public static func stringToSign(method: String, path: String, query: [(String, String)]) -> String {
        let params = query.map { ($0.0.lowercased(), $0.1) }.filter { $0.0 != "auth_signature" }
            .sorted { $0.0 < $1.0 }
        return method + "\n" + path + "\n" + params.map { $0.0 + "=" + $0.1 }.joined(separator: "&")
    }

    public static func sign(secret: String, method: String, path: String, query: [(String, String)]) -> String {
        Digest.hex(Digest.hmacSHA256(key: Array(secret.utf8), data: Array(stringToSign(method: method, path: path, query: query).utf8)))
    }

    /// Checks a request; `secretFor` maps an `auth_key` to its app's secret. Returns the key.
    public static func verify(method: String, path: String, query: [(String, String)], body: [UInt8],
                              now: Int, secretFor: (String) -> String?) throws(Failure) -> String {
        func param(_ n: String) -> String? { query.first { $0.0.lowercased() == n }?.1 }
        guard let key = param("auth_key") else { throw .missing("auth_key") }
        guard let ts = param("auth_timestamp") else { throw .missing("auth_timestamp") }
        guard let sig = param("auth_signature") else { throw .missing("auth_signature") }
        guard param("auth_version") == "1.0" else { throw param("auth_version") == nil ? .missing("auth_version") : .badVersion }
        guard let secret = secretFor(key) else { throw .unknownKey }
        // Parsed and compared without overflow: the timestamp is attacker-chosen.
        guard let t = Int(ts) else { throw .expired(skew: Int.max) }
        let (diff, overflow) = now.subtractingReportingOverflow(t)
        guard !overflow, diff.magnitude <= UInt(maxClockSkew) else { throw .expired(skew: overflow ? Int.max : Int(clamping: diff.magnitude)) }
        if let md5 = param("body_md5") {
            guard md5.lowercased() == Digest.hex(Digest.md5(body)) else { throw .bodyMD5Mismatch }
        } else if !body.isEmpty {
            throw .missing("body_md5")
        }
        let expected = sign(secret: secret, method: method, path: path, query: query)
        guard Digest.constantTimeEqual(Array(expected.utf8), Array(sig.lowercased().utf8)) else { throw .badSignature }
        return key
    }
}
