@testable import HalleyHub
import HalleyProtocol
import Testing

@testable import HalleyEndpoints

@Suite struct BearerTokenTests {
    func token(_ header: String) -> [UInt8]? { HubEndpoints.bearerToken(ArraySlice(header.utf8)).map { Array($0) } }

    @Test func takesTheSchemeInAnyCaseAndTrimsTheToken() {
        #expect(token("Bearer tok") == Array("tok".utf8))
        #expect(token("bEaReR tok") == Array("tok".utf8))
        #expect(token("BEARER \t tok \t ") == Array("tok".utf8))
        #expect(token("Bearer to k") == Array("to k".utf8))
        #expect(token("Bearer ") == [])
        #expect(token("Bearer  \t") == [])
        // Compared as bytes: a combining mark after the space is the token's.
        #expect(token("Bearer \u{301}tok") == Array("\u{301}tok".utf8))
    }

    @Test func refusesAnotherScheme() {
        for h in [
            "Bearer", "Bear", "", "Basic tok", "Bearer\ttok", "Bearertok", "Bearer\u{0}tok", "Béarer tok",
            "xBearer tok",
        ] {
            #expect(token(h) == nil, "\(h)")
        }
    }
}

/// POST /publish's answer, written sized first (`SizedJSON`), against the same JSON written
/// piece by piece with `JSONWriter` (what it was before): byte for byte, for no channel, one,
/// several, names and epochs needing every kind of escape, and the largest numbers.
@Suite struct PublishedAnswerTests {
    func reference(_ r: Hub.PublishResult) -> [UInt8] {
        var b: [UInt8] = Array(#"{"channels":{"#.utf8)
        for (k, c) in r.channels.enumerated() {
            if k > 0 { b.append(UInt8(ascii: ",")) }
            JSONWriter.writeString(c.name, into: &b)
            b += Array(#":{"offset":"#.utf8)
            JSONWriter.writeDecimal(c.offset, into: &b)
            b += Array(#","epoch":"#.utf8)
            JSONWriter.writeString(c.epoch, into: &b)
            b.append(UInt8(ascii: "}"))
        }
        b += Array(#"},"sessions":"#.utf8)
        JSONWriter.writeDecimal(UInt64(r.sessions), into: &b)
        b.append(UInt8(ascii: "}"))
        return b
    }

    @Test func writesWhatTheWriterWrites() throws {
        let names = [
            "news", "", "private-a", "q\"b\\c", "tab\tnl\ncr\r", "\u{1}\u{1f}", "é😀",
            String(repeating: "x", count: 200),
            String(repeating: "\u{2}", count: 30),
        ]
        var cases: [Hub.PublishResult] = [Hub.PublishResult()]
        for (i, n) in names.enumerated() {
            var r = Hub.PublishResult()
            r.channels = [Hub.PublishResult.Channel(n, UInt64(i), "e\(i)\"\(n)")]
            r.sessions = i
            cases.append(r)
        }
        var many = Hub.PublishResult()
        many.channels = names.map { Hub.PublishResult.Channel($0, UInt64.max, $0) }
        many.sessions = Int(Int32.max)
        cases.append(many)
        for r in cases {
            let answer = HubEndpoints.published(r)
            guard case .bytes(let body) = answer.body else {
                Issue.record("the answer's body is not bytes")
                continue
            }
            #expect(body == reference(r))
            #expect(answer.status == (r.sessions > 0 ? 201 : 202))
            _ = try JSONParser.parse(body)  // and it is JSON
        }
    }
}
