import Testing
@testable import HalleyProtocol

@Suite struct ChannelNameTests {
    @Test func acceptsPusherNamesUpTo164Characters() {
        #expect(ChannelName.problem("news") == nil)
        #expect(ChannelName.problem("a-b_c=d@e,f.g;h") == nil)
        #expect(ChannelName.problem(String(repeating: "x", count: 164)) == nil)
    }

    @Test(arguments: ["", "a b", "a/b", "é", "a:b", "a#b", String(repeating: "x", count: 165)])
    func refusesOthers(_ name: String) {
        #expect(ChannelName.problem(name) != nil)
    }

    @Test func kinds() {
        #expect(ChannelName.kind("news") == .public)
        #expect(ChannelName.kind("cache-news") == .cache)
        #expect(ChannelName.kind("private-news") == .private)
        #expect(ChannelName.kind("private-cache-news") == .private)
        #expect(ChannelName.kind("presence-room") == .presence)
    }
}

@Suite struct QueryTests {
    @Test func decodesFormEncoding() {
        let q = Query.parse("a=1&b=x+y&c=%2F%e2%9c%93&d&&e=")
        #expect(q.map(\.0) == ["a", "b", "c", "d", "e"])
        #expect(q.map(\.1) == ["1", "x y", "/✓", "", ""])
        #expect(Query.value(q, "c") == "/✓")
        #expect(Query.parse(nil).isEmpty)
        // A broken escape stays as it came.
        #expect(Query.decode("%zz%4") == "%zz%4")
    }

    /// Every string of up to four pieces from `&`, `=`, `%`, `+`, hex digits, a letter and a
    /// two-byte character parses as the URL Standard's steps spelled out one byte at a time.
    @Test func agreesWithTheStepsSpelledOut() {
        func reference(_ q: String) -> [(String, String)] {
            func decode(_ s: Substring) -> String {
                let b = Array(s.utf8)
                var out: [UInt8] = []
                var i = 0
                func hex(_ c: UInt8) -> UInt8? { UInt8(String(UnicodeScalar(c)), radix: 16) }
                while i < b.count {
                    if b[i] == UInt8(ascii: "+") {
                        out.append(0x20)
                    } else if b[i] == UInt8(ascii: "%"), i + 2 < b.count, let h = hex(b[i + 1]), let l = hex(b[i + 2]) {
                        out.append(h << 4 | l)
                        i += 2
                    } else {
                        out.append(b[i])
                    }
                    i += 1
                }
                return String(decoding: out, as: UTF8.self)
            }
            return q.split(separator: "&", omittingEmptySubsequences: true).map { part in
                guard let eq = part.firstIndex(of: "=") else { return (decode(part), "") }
                return (decode(part[..<eq]), decode(part[part.index(after: eq)...]))
            }
        }
        let pieces = ["&", "=", "%", "+", "2", "F", "a", "é"]
        var texts = [""]
        var last = [""]
        for _ in 0..<4 {
            last = last.flatMap { t in pieces.map { t + $0 } }
            texts += last
        }
        for t in texts {
            let got = Query.parse(Substring(t))
            let want = reference(t)
            #expect(got.map(\.0) == want.map(\.0) && got.map(\.1) == want.map(\.1), "\(t)")
        }
    }
}

@Suite struct PusherSignatureTests {
    // The worked example of Pusher's "HTTP API reference", "Generating authentication
    // signatures".
    let key = "278d425bdf160c739803"
    let secret = "7ad3773142a6692b25b8"
    let body = Array(#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#.utf8)
    var query: [(String, String)] {
        [
            ("auth_key", key), ("auth_timestamp", "1353088179"), ("auth_version", "1.0"),
            ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
        ]
    }

    @Test func signsLikeThePusherDocumentation() {
        let s = PusherSignature.stringToSign(method: "POST", path: "/apps/3/events", query: query)
        #expect(
            s
                == "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
        )
        #expect(
            PusherSignature.sign(secret: secret, method: "POST", path: "/apps/3/events", query: query)
                == "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c")
    }

    /// The signed text against its definition spelled out: keys lowercased, auth_signature
    /// left out, sorted by their bytes (equal keys in the order given), for every order of a
    /// query with upper-case, repeated, empty and non-ASCII keys and values.
    @Test func signedTextSortsKeysAsBytesStably() {
        let pairs: [(String, String)] = [
            ("b", "1"), ("A", "2"), ("a", "3"), ("auth_signature", "x"), ("é", "ü"), ("", "e"), ("a_", ""),
            ("AUTH_KEY", "k"), ("z", "&="),
        ]
        func reference(_ q: [(String, String)]) -> String {
            let kept = q.enumerated().map { ($0.offset, $0.element.0.lowercased(), $0.element.1) }
                .filter { $0.1 != "auth_signature" }
            let sorted = kept.sorted { x, y in
                x.1.utf8.lexicographicallyPrecedes(y.1.utf8) || (x.1.utf8.elementsEqual(y.1.utf8) && x.0 < y.0)
            }
            return "GET\n/p\n" + sorted.map { "\($0.1)=\($0.2)" }.joined(separator: "&")
        }
        var order = pairs
        for round in 0..<200 {
            // A fixed sequence of orders: rotations and swaps, no randomness.
            order.swapAt(round % order.count, (round * 7 + 3) % order.count)
            if round % 5 == 0 { order = Array(order.dropFirst()) + [order[0]] }
            #expect(PusherSignature.stringToSign(method: "GET", path: "/p", query: order) == reference(order))
        }
        #expect(PusherSignature.stringToSign(method: "GET", path: "/p", query: []) == "GET\n/p\n")
    }

    func verify(
        _ q: [(String, String)], body: [UInt8]? = nil, now: Int = 1353088179,
        secrets: [String]? = nil
    ) throws(PusherSignature.Failure) -> String {
        try PusherSignature.verify(method: "POST", path: "/apps/3/events", query: q, body: body ?? self.body, now: now)
        {
            $0 == key ? (secrets ?? [secret]) : []
        }
    }

    /// A rotation's overlap: the signature of either secret passes, of neither fails.
    @Test func acceptsAnyOfTheAppsSecrets() throws {
        #expect(try verify(signed, secrets: ["new-secret", secret]) == key)
        #expect(try verify(signed, secrets: [secret, "new-secret"]) == key)
        #expect(throws: PusherSignature.Failure.badSignature) { try verify(signed, secrets: ["new-secret", "other"]) }
    }

    var signed: [(String, String)] {
        query + [("auth_signature", "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c")]
    }

    @Test func verifiesASignedRequest() throws {
        #expect(try verify(signed) == key)
        #expect(try verify(signed, now: 1353088179 + 600) == key)
        #expect(try verify(signed.reversed()) == key)
    }

    @Test func refusesEveryWayOfGettingItWrong() {
        #expect(throws: PusherSignature.Failure.expired(skew: 601)) { try verify(signed, now: 1353088179 + 601) }
        #expect(throws: PusherSignature.Failure.expired(skew: 601)) { try verify(signed, now: 1353088179 - 601) }
        // Attacker-chosen timestamps at the edges of Int: refused, no overflow trap.
        #expect(throws: PusherSignature.Failure.expired(skew: Int.max)) {
            try verify(signed.map { $0.0 == "auth_timestamp" ? ($0.0, String(Int.min)) : $0 })
        }
        #expect(throws: PusherSignature.Failure.self) {
            try verify(signed.map { $0.0 == "auth_timestamp" ? ($0.0, String(Int.max)) : $0 })
        }
        #expect(throws: PusherSignature.Failure.bodyMD5Mismatch) { try verify(signed, body: Array("{}".utf8)) }
        #expect(throws: PusherSignature.Failure.missing("auth_signature")) { try verify(query) }
        #expect(throws: PusherSignature.Failure.missing("body_md5")) {
            try verify(signed.filter { $0.0 != "body_md5" })
        }
        #expect(throws: PusherSignature.Failure.unknownKey) {
            try verify(signed.map { $0.0 == "auth_key" ? ($0.0, "other") : $0 })
        }
        #expect(throws: PusherSignature.Failure.badVersion) {
            try verify(signed.map { $0.0 == "auth_version" ? ($0.0, "2.0") : $0 })
        }
        #expect(throws: PusherSignature.Failure.badSignature) { try verify(signed + [("extra", "1")]) }
        #expect(throws: PusherSignature.Failure.badSignature) {
            try verify(signed.map { $0.0 == "auth_signature" ? ($0.0, String(repeating: "0", count: 64)) : $0 })
        }
    }
}
