import Testing
import HalleyCore
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

    /// The prefix as `JSONObjectBuilder` writes it, field by field (what `eventPrefix` wrote
    /// before it sized its array first).
    func builtPrefix(_ e: String, _ c: String?, _ d: String, _ binary: Bool, _ off: UInt64, _ u: String?) -> [UInt8] {
        var b = JSONObjectBuilder()
        b.string("event", e)
        if let c { b.string("channel", c) }
        b.string("data", d)
        if let u { b.string("user_id", u) }
        if binary { b.bool("halley:binary", true) }
        if off > 0 { b.int("halley:offset", off) }
        return b.open
    }

    /// Every byte below 0x80 (each escape and none) at every place of a word and past it, in
    /// each of the four strings, with and without the optional fields: the same bytes as the
    /// builder, and never more than the room counted.
    @Test func eventPrefixWritesWhatTheBuilderWrites() {
        var texts = ["", "a", "bench", "0123456789abcdef0123", "é😀", String(repeating: "x", count: 300)]
        for byte in UInt8(0)..<0x80 {
            for at in [0, 3, 7, 8, 9, 15] {
                var s = Array(repeating: UInt8(ascii: "m"), count: 17)
                s[at] = byte
                texts.append(String(decoding: s, as: UTF8.self))
            }
        }
        texts.append(String(repeating: "\u{01}", count: 50))  // all six-byte escapes
        for t in texts {
            for (k, off) in [UInt64(0), 1, UInt64.max].enumerated() {
                let bin = k == 1
                #expect(
                    Wire.eventPrefix(event: t, channel: "c", data: "d", binary: bin, offset: off)
                        == builtPrefix(t, "c", "d", bin, off, nil))
                #expect(
                    Wire.eventPrefix(event: "e", channel: t, data: t, offset: off, userID: t)
                        == builtPrefix("e", t, t, false, off, t))
                #expect(
                    Wire.eventPrefix(event: "e", channel: nil, data: t, binary: bin, offset: off, userID: "u")
                        == builtPrefix("e", nil, t, bin, off, "u"))
            }
        }
    }

    @Test(arguments: [UInt64(0), 1, 9, 10, 99, 100, 12345, UInt64.max])
    func seqTailWritesEveryNumber(_ n: UInt64) {
        #expect(text(Wire.seqTail(n)) == ",\"halley:seq\":\(n)}")
        #expect(Wire.seqTail(n).count <= Wire.seqTailMax)
        if n == .max { #expect(Wire.seqTail(n).count == Wire.seqTailMax) }  // the bound is tight
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

/// `SizedJSON.escapedCount` is the length `JSONWriter` writes inside the quotes, for every
/// byte below 0x80 at every place of a word and past it, runs of escapes and other scripts:
/// the sized writers reserve exactly that.
@Suite struct EscapedCountTests {
    @Test func countsWhatTheWriterWrites() {
        var texts = ["", "a", String(repeating: "\"", count: 17), "é😀\u{7f}", String(repeating: "\u{1f}", count: 9)]
        for byte in UInt8(0)..<0x80 {
            for at in [0, 1, 7, 8, 9, 16] {
                var s = Array(repeating: UInt8(ascii: "k"), count: 18)
                s[at] = byte
                texts.append(String(decoding: s, as: UTF8.self))
            }
        }
        for t in texts {
            #expect(SizedJSON.escapedCount(t) == JSONWriter.string(t).count - 2, "\(t.debugDescription)")
        }
    }
}

@Suite struct WrittenBytesTests {
    /// `[UInt8](writing:)` holds exactly what was written, at every size across the 4 KiB
    /// where it changes how it allocates, written in full, in part or not at all.
    @Test(arguments: [0, 1, 2, 125, 126, 1024, 4095, 4096, 4097, 65536])
    func holdsWhatWasWritten(_ capacity: Int) {
        for n in Set([0, capacity / 2, max(0, capacity - 1), capacity]) {
            let a = [UInt8](writing: capacity) { p in
                for i in 0..<n {
                    p.storeBytes(of: UInt8(truncatingIfNeeded: i &* 31 &+ 7), toByteOffset: i, as: UInt8.self)
                }
                return n
            }
            #expect(a == (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }, "\(capacity) \(n)")
        }
    }
}
