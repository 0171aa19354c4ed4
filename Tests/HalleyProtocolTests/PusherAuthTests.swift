import Testing
@testable import HalleyProtocol

@Suite struct PusherAuthTests {
    // The worked examples of Pusher's "Auth signatures" page.
    let key = "278d425bdf160c739803"
    let secret = "7ad3773142a6692b25b8"

    @Test func signsUserSignInLikeThePusherDocumentation() throws {
        let text = PusherAuth.userString(socketID: "1234.1234", userData: #"{"id":"12345"}"#)
        #expect(text == #"1234.1234::user::{"id":"12345"}"#)
        let auth = PusherAuth.token(key: key, secret: secret, text: text)
        #expect(auth == "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba")
        try PusherAuth.verify(auth: auth, key: key, secret: secret, text: text)
    }

    /// A rotation's overlap: a signature by either secret passes, by neither fails.
    @Test func acceptsAnyOfTheAppsSecrets() throws {
        let auth = PusherAuth.token(key: key, secret: secret, text: "1.2:private-x")
        try PusherAuth.verify(auth: auth, key: key, secrets: ["new", secret], text: "1.2:private-x")
        #expect(throws: PusherAuth.Failure.badSignature) {
            try PusherAuth.verify(auth: auth, key: key, secrets: ["new", "other"], text: "1.2:private-x")
        }
    }

    @Test func signsPrivateAndPresenceChannels() throws {
        #expect(
            PusherAuth.channelString(socketID: "1234.1234", channel: "private-foobar", channelData: nil)
                == "1234.1234:private-foobar")
        let auth = PusherAuth.token(key: key, secret: secret, text: "1234.1234:private-foobar")
        // Pusher's documented signature for this socket and channel.
        #expect(auth == "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4")
        let cd = #"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#
        #expect(
            PusherAuth.channelString(socketID: "1234.1234", channel: "presence-foobar", channelData: cd)
                == "1234.1234:presence-foobar:" + cd)
    }

    @Test func refusesEveryWayOfGettingItWrong() {
        let text = "1.2:private-x"
        let good = PusherAuth.token(key: key, secret: secret, text: text)
        func failure(_ auth: String) -> PusherAuth.Failure? {
            do {
                try PusherAuth.verify(auth: auth, key: key, secret: secret, text: text)
                return nil
            } catch {
                return error
            }
        }
        #expect(failure(good) == nil)
        #expect(failure(good.uppercased().replacingKeyPrefix(key)) == nil)  // hex case does not matter
        #expect(failure("") == .malformed)
        #expect(failure("nocolon") == .malformed)
        #expect(failure(":" + String(good.split(separator: ":")[1])) == .malformed)
        #expect(failure("other:" + String(good.split(separator: ":")[1])) == .wrongKey)
        #expect(failure(key + ":" + String(repeating: "0", count: 64)) == .badSignature)
        #expect(failure(key + ":") == .badSignature)
        #expect(failure(String(good.dropLast())) == .badSignature)
        #expect(failure(good + "0") == .badSignature)
    }

    @Test func parsesPresenceMembers() throws {
        let m = try PresenceMember.parse(#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#)
        #expect(m.userID == "10")
        #expect(String(decoding: m.info, as: UTF8.self) == #"{"name":"Mr. Channels"}"#)
        let s = try PresenceMember.parse(#"{"user_id":"ann"}"#)
        #expect(s.userID == "ann" && s.info == Array("null".utf8))
        #expect(throws: PresenceMember.Failure.notJSON) { try PresenceMember.parse("nope") }
        #expect(throws: PresenceMember.Failure.notJSON) { try PresenceMember.parse("[1]") }
        #expect(throws: PresenceMember.Failure.noUserID) { try PresenceMember.parse(#"{"user_info":{}}"#) }
        #expect(throws: PresenceMember.Failure.noUserID) { try PresenceMember.parse(#"{"user_id":""}"#) }
        #expect(throws: PresenceMember.Failure.noUserID) { try PresenceMember.parse(#"{"user_id":true}"#) }
        #expect(throws: PresenceMember.Failure.userIDTooLong) {
            try PresenceMember.parse(#"{"user_id":""# + String(repeating: "x", count: 129) + #""}"#)
        }
        #expect(
            try PresenceMember.parse(#"{"user_id":""# + String(repeating: "x", count: 128) + #""}"#).userID.count == 128
        )
    }
}

extension String {
    /// `self` with its first `key.count` characters replaced by `key` (the key part of an
    /// auth token keeps its case).
    fileprivate func replacingKeyPrefix(_ key: String) -> String { key + dropFirst(key.count) }
}
