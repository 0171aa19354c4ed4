import HalleyCrypto

/// Client authentication of the Pusher protocol ("Pusher Channels Protocol", "Authorizing
/// subscriptions", "User authentication"): the app's backend signs, the hub checks.
///
/// - private and `private-encrypted-` channels: `auth = key:hex(HMAC-SHA256(secret, "socket_id:channel"))`
/// - presence channels: the same over `"socket_id:channel:channel_data"`
/// - user sign-in: the same over `"socket_id::user::user_data"`
public enum PusherAuth {
    public static func channelString(socketID: String, channel: String, channelData: String?) -> String {
        if let d = channelData { return socketID + ":" + channel + ":" + d }
        return socketID + ":" + channel
    }

    public static func userString(socketID: String, userData: String) -> String {
        socketID + "::user::" + userData
    }

    /// `key:signature` for `text` (what an app's backend answers; used by tests and tools).
    public static func token(key: String, secret: String, text: String) -> String {
        key + ":" + Digest.hex(Digest.hmacSHA256(key: secret, data: Array(text.utf8)))
    }

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case malformed
        case wrongKey
        case badSignature

        public var description: String {
            switch self {
            case .malformed: return "auth must be 'key:signature'"
            case .wrongKey: return "auth is for another app key"
            case .badSignature: return "invalid signature"
            }
        }
    }

    /// Checks `auth` (`key:hex`) against the expected signature of `text`, in constant time.
    public static func verify(auth: String, key: String, secret: String, text: String) throws(Failure) -> Void {
        try verify(auth: auth, key: key, secrets: [secret], text: text)
    }

    /// The same against any of `secrets` (a rotation's overlap accepts the previous secret).
    public static func verify(auth: String, key: String, secrets: [String], text: String) throws(Failure) -> Void {
        let a = Array(auth.utf8)
        guard let colon = a.lastIndex(of: UInt8(ascii: ":")), colon > 0 else { throw .malformed }
        guard a[..<colon].elementsEqual(key.utf8) else { throw .wrongKey }
        // Hex is case-insensitive; SDKs write lower case.
        let given = a[(colon + 1)...].map { $0 >= 65 && $0 <= 70 ? $0 | 0x20 : $0 }
        let data = Array(text.utf8)
        let ok = secrets.contains {
            Digest.constantTimeEqual(Array(Digest.hex(Digest.hmacSHA256(key: $0, data: data)).utf8), given)
        }
        guard ok else { throw .badSignature }
    }
}

/// A presence channel member as the app's backend describes it in `channel_data`:
/// `{"user_id": "…" or a number, "user_info": any}`.
public struct PresenceMember: Equatable, Sendable {
    public var userID: String
    /// `user_info` serialized (`null` when absent).
    public var info: [UInt8]

    /// Longest `user_id`, bytes of UTF-8. Pusher: 128 characters.
    public static let maxUserIDLength = 128

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case notJSON
        case noUserID
        case userIDTooLong

        public var description: String {
            switch self {
            case .notJSON: return "channel_data must be a JSON object"
            case .noUserID: return "channel_data must have a user_id (string or number)"
            case .userIDTooLong: return "user_id is longer than \(PresenceMember.maxUserIDLength) bytes"
            }
        }
    }

    public init(userID: String, info: [UInt8]) {
        self.userID = userID
        self.info = info
    }

    public static func parse(_ channelData: String) throws(Failure) -> PresenceMember {
        guard let v = try? JSONParser.parse(Array(channelData.utf8)), let o = v.object else { throw .notJSON }
        let id: String
        switch o["user_id"] {
        case .string(let s)?: id = s
        case .number(let n)?: id = n
        default: throw .noUserID
        }
        guard !id.isEmpty else { throw .noUserID }
        guard id.utf8.count <= maxUserIDLength else { throw .userIDTooLong }
        return PresenceMember(userID: id, info: o["user_info"]?.serialized ?? Array("null".utf8))
    }
}
