import Testing
@testable import HalleyProtocol

func text(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }

@Suite struct WireTests {
    @Test func eventPrefixPlusTailIsOneJSONObject() throws {
        let p = Wire.eventPrefix(event: "e\"1", channel: "news", data: "{\"a\":\"\n\"}", offset: 17)
        #expect(text(p) == #"{"event":"e\"1","channel":"news","data":"{\"a\":\"\n\"}","halley:offset":17"#)
        let plain = try JSONParser.parse(p + Wire.plainTail)
        #expect(plain["data"]?.string == "{\"a\":\"\n\"}")
        let seq = try JSONParser.parse(p + Wire.seqTail(42))
        #expect(seq["halley:seq"]?.uint64 == 42)
        #expect(seq["halley:offset"]?.uint64 == 17)
    }

    @Test(arguments: [UInt64(0), 1, 9, 10, 99, 100, 12345, UInt64.max])
    func seqTailWritesEveryNumber(_ n: UInt64) {
        #expect(text(Wire.seqTail(n)) == ",\"halley:seq\":\(n)}")
    }

    @Test func binaryFlagAndHeader() throws {
        let p = try JSONParser.parse(
            Wire.eventPrefix(event: "b", channel: "c", data: "AAE=", binary: true, offset: 3) + Wire.plainTail)
        #expect(p["halley:binary"] == .bool(true))
        #expect(
            text(Wire.binaryHeaderPrefix(event: "b", channel: "c", offset: 3))
                == #"{"event":"b","channel":"c","halley:offset":3"#)
    }

    @Test func protocolEventsCarryDataAsAJSONString() throws {
        var d = JSONObjectBuilder()
        d.string("socket_id", "1.2")
        d.int("activity_timeout", 120)
        let m = try JSONParser.parse(Wire.protocolEvent("pusher:connection_established", data: d) + Wire.plainTail)
        #expect(m["data"]?.string == #"{"socket_id":"1.2","activity_timeout":120}"#)
        let e = try JSONParser.parse(Wire.error(code: 4001, message: "no"))
        #expect(e["data"]?["code"]?.uint64 == 4001)
        #expect(try JSONParser.parse(Wire.error(code: nil, message: "x"))["data"]?["code"] == .null)
    }

    @Test func sseFramingAndEventIDs() {
        let prelude = Wire.ssePrelude(padding: 2048, retryMillis: 1000)
        #expect(prelude.count == 1 + 2048 + 1 + "retry: 1000\n\n".utf8.count)
        #expect(prelude.first == UInt8(ascii: ":"))
        #expect(text(Wire.sseEventHead(seq: 7, session: "1.2", token: "ab")) == "id: 7:1.2:ab\ndata: ")
        let id = Wire.parseEventID("7:1.2:ab")
        #expect(id?.seq == 7 && id?.session == "1.2" && id?.token == "ab")
        #expect(Wire.parseEventID("7:1.2") == nil)
        #expect(Wire.parseEventID("x:1.2:ab") == nil)
        #expect(Wire.parseEventID("7::ab") == nil)
    }
}
