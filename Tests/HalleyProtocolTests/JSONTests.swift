import Testing
@testable import HalleyProtocol

func parse(_ s: String) throws -> JSONValue { try JSONParser.parse(Array(s.utf8)) }

@Suite struct JSONParserTests {
    @Test func parsesEveryKindOfValue() throws {
        let v = try parse(#" {"a": [1, -2.5e+3, true, false, null], "b": {"c": "d"}, "e": ""} "#)
        #expect(v["a"] == .array([.number("1"), .number("-2.5e+3"), .bool(true), .bool(false), .null]))
        #expect(v["b"]?["c"]?.string == "d")
        #expect(v["e"]?.string == "")
    }

    @Test func decodesEscapesAndSurrogatePairs() throws {
        #expect(try parse(#""\"\\\/\b\f\n\r\t""#) == .string("\"\\/\u{8}\u{c}\n\r\t"))
        #expect(try parse(#""\u00e9\u2028\ud83d\ude00""#) == .string("é\u{2028}😀"))
        #expect(try parse("\"é😀\"") == .string("é😀"))
    }

    @Test func keepsLargeIntegersExactly() throws {
        let v = try parse(#"{"seq": 18446744073709551615, "s": "12"}"#)
        #expect(v["seq"]?.uint64 == UInt64.max)
        #expect(v["s"]?.uint64 == 12)
        #expect(try parse("1.5").uint64 == nil)
        #expect(try parse("-1").uint64 == nil)
    }

    @Test(arguments: [
        "", " ", "{", "[1,", "[1 2]", "{\"a\" 1}", "{\"a\":1,}", "[1,]", "01", "1.", "1e", "-", ".5",
        "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\ud83d\"", "\"\\ude00\"", "\"a\u{1}b\"", "tru", "nul", "{} x", "{1:2}",
    ])
    func rejectsMalformedInput(_ text: String) {
        #expect(throws: JSONError.self) { try parse(text) }
    }

    @Test func rejectsInvalidUTF8InStrings() {
        #expect(throws: JSONError.self) { try JSONParser.parse([0x22, 0xC3, 0x28, 0x22]) }
        #expect(throws: JSONError.self) { try JSONParser.parse([0x22, 0xED, 0xA0, 0x80, 0x22]) }
        // A sequence cut short by the closing quote; an overlong form; past U+10FFFF.
        #expect(throws: JSONError.self) { try JSONParser.parse([0x22, 0x61, 0xE2, 0x82, 0x22]) }
        #expect(throws: JSONError.self) { try JSONParser.parse([0x22, 0xC0, 0xAF, 0x22]) }
        #expect(throws: JSONError.self) { try JSONParser.parse([0x22, 0xF4, 0x90, 0x80, 0x80, 0x22]) }
        // The same after an escape (the string is built in a copy then).
        #expect(throws: JSONError.self) { try JSONParser.parse([0x22, 0x5C, 0x6E, 0xC3, 0x22]) }
        #expect(throws: JSONError.self) { try JSONParser.parse([0x22, 0x5C, 0x6E, 0xED, 0xA0, 0x80, 0x22]) }
    }

    @Test func readsUTF8InStringsWithAndWithoutEscapes() throws {
        // 2-, 3- and 4-byte forms, raw and around an escape, and a long ASCII run (the validator's
        // word-at-a-time path) with a multibyte character at its end.
        #expect(try JSONParser.parse(Array("\"é€😀\"".utf8)).string == "é€😀")
        #expect(try JSONParser.parse(Array("\"é\\n€\\u00e9😀\"".utf8)).string == "é\n€é😀")
        let long = String(repeating: "a", count: 70) + "ü"
        #expect(try JSONParser.parse(Array("\"\(long)\"".utf8)).string == long)
        #expect(try JSONParser.parse([0x22, 0x22]).string == "")
    }

    @Test func boundsNestingDepth() throws {
        let ok = String(repeating: "[", count: JSONParser.maxDepth) + String(repeating: "]", count: JSONParser.maxDepth)
        #expect(try parse(ok).array != nil)
        let deep =
            String(repeating: "[", count: JSONParser.maxDepth + 1)
            + String(repeating: "]", count: JSONParser.maxDepth + 1)
        #expect(throws: JSONError.self) { try parse(deep) }
        // Far deeper than any stack would take recursively: refused, not a crash.
        #expect(throws: JSONError.self) { try parse(String(repeating: "[", count: 100_000)) }
    }

    /// `parseFields` (a publish body's members without a dictionary) reads what `parse`
    /// reads: the same members, the last of a repeated key, nil for another kind of value,
    /// and an error for every malformed text and every cut of a valid one.
    @Test func fieldsAgreeWithTheDictionaryParse() throws {
        let objects = [
            #"{}"#, #" { "channel" : "bench", "event":"e", "data":"x\"y" } "#,
            #"{"a":1,"a":2,"b":[1,{"c":null}],"a":"last"}"#, #"{"data":{"k":[true,false]},"name":"n"}"#,
            #"{"é":"😀","":""}"#, #"{"\u0061":1,"b\"c":2,"a":3,"d\\":[]}"#, #"{"\u212A":1,"Kx":2}"#,
            "{\"\u{212A}y\":1}",
        ]
        for text in objects {
            let bytes = Array(text.utf8)
            let dict = try #require(try JSONParser.parse(bytes).object)
            let fields = try #require(try JSONParser.parseFields(bytes))
            #expect(Set(fields.keys) == Set(dict.keys))
            for k in dict.keys { #expect(fields[k] == dict[k], "\(text): \(k)") }
            #expect(fields["missing"] == nil)
            // Other spellings of a key, as a dictionary finds them (U+212A KELVIN SIGN is "K"
            // as a string), and keys that share only a prefix with one given.
            for k in ["K", "Kx", "\u{212A}x", "Ky", "\u{212A}y", "a", "aa", "b", "b\"c", "d", "d\\", "", "é"] {
                #expect(fields[k] == dict[k], "\(text): \(k)")
            }
            let end = bytes.lastIndex(where: { $0 != 0x20 })! + 1  // trailing spaces are no part to cut
            for cut in 0..<end {
                let prefix = Array(bytes[..<cut])
                #expect(throws: JSONError.self, "\(text) cut at \(cut)") { try JSONParser.parseFields(prefix) }
            }
        }
        #expect(try JSONParser.parseFields(Array(#"{"a":1,"a":2}"#.utf8))?["a"] == .number("2"))
        for other in ["[1]", "\"s\"", "1", "null", " true "] {
            #expect(try JSONParser.parseFields(Array(other.utf8)) == nil)
        }
        for bad in ["{\"a\":1,}", "{\"a\" 1}", "{} x", "{1:2}", "{\"a\":01}", "[1,"] {
            #expect(throws: JSONError.self, "\(bad)") { try JSONParser.parseFields(Array(bad.utf8)) }
        }
        // The object is depth 0, its members depth 1: both parsers take maxDepth - 1 arrays
        // inside a member and refuse maxDepth.
        func nested(_ k: Int) -> [UInt8] {
            Array(("{\"a\":" + String(repeating: "[", count: k) + String(repeating: "]", count: k) + "}").utf8)
        }
        let ok = nested(JSONParser.maxDepth - 1)
        #expect(try JSONParser.parseFields(ok)?["a"] == JSONParser.parse(ok)["a"])
        #expect(throws: JSONError.self) { try JSONParser.parse(nested(JSONParser.maxDepth)) }
        #expect(throws: JSONError.self) { try JSONParser.parseFields(nested(JSONParser.maxDepth)) }
    }

    /// `readObject` (a publish body in one pass) gives, for each key asked for, the value
    /// `parseFields` finds (the last of a repeated key; escaped and non-ASCII spellings as a
    /// string compares them), drops the rest, answers false for another kind of value, and
    /// throws the same error for every malformed text and every cut of a valid one.
    @Test(
        arguments: [
            // Keys distinct as strings (readObject gives a member to the first key it equals):
            // U+212A KELVIN SIGN asked for in one list, "K" in the other.
            ["channel", "event", "data", "a", "", "K", "b\"c", "é", "Kx"],
            ["channel", "event", "data", "a", "", "\u{212A}", "b\"c", "é", "\u{212A}x"],
        ] as [[StaticString]])
    func readObjectAgreesWithTheFields(_ keys: [StaticString]) throws {
        let texts = [
            #"{}"#, #" { "channel" : "bench", "event":"e", "data":"x\"y" } "#,
            #"{"a":1,"a":2,"b":[1,{"c":null}],"a":"last"}"#, #"{"data":{"k":[true,false]},"name":"n"}"#,
            #"{"é":"😀","":""}"#, #"{"\u0061":1,"b\"c":2,"a":3,"d\\":[]}"#, #"{"\u212A":1,"Kx":2}"#,
            #"{"\u0063hannel":"c","channel":"d","chann":1,"channels":2}"#, "{\"\u{212A}\":1}", #"{"K":1,"Kx":2}"#,
            "[1]", "\"s\"", "1", "null", " true ", "{\"a\":1,}", "{\"a\" 1}", "{} x", "{1:2}", "[1,",
        ]
        for text in texts {
            let bytes = Array(text.utf8)
            var got = [JSONValue?](repeating: nil, count: keys.count)
            let read = Result { () throws(JSONError) -> Bool in
                try JSONParser.readObject(bytes, keys: keys) { k, v in got[k] = v }
            }
            switch (read, Result { () throws(JSONError) -> JSONFields? in try JSONParser.parseFields(bytes) }) {
            case (.success(true), .success(let f?)):
                for (k, key) in keys.enumerated() { #expect(got[k] == f[key.description], "\(text): \(key)") }
            case (.success(false), .success(nil)): break
            case (.failure(let a), .failure(let b)): #expect(a == b, "\(text)")
            default: Issue.record("\(text): readObject \(read), parseFields disagrees")
            }
            if case .success(true) = read {
                let end = bytes.lastIndex(where: { $0 != 0x20 })! + 1
                for cut in 0..<end {
                    #expect(throws: JSONError.self, "\(text) cut at \(cut)") {
                        try JSONParser.readObject(Array(bytes[..<cut]), keys: keys) { _, _ in }
                    }
                }
            }
        }
    }

    @Test func writesDecimals() {
        for v: UInt64 in [0, 1, 9, 10, 99, 100, 12345, 1 << 53, UInt64.max - 1, UInt64.max] {
            var out: [UInt8] = [0x2A]
            JSONWriter.writeDecimal(v, into: &out)
            #expect(out == [0x2A] + Array(String(v).utf8))
        }
    }

    @Test func serializesCompactlyWithSortedKeysAndRoundTrips() throws {
        let text = #"{"z":[1,"a\"b\n\u0001"],"a":{"y":null,"x":true}}"#
        let v = try parse(text)
        let out = String(decoding: v.serialized, as: UTF8.self)
        #expect(out == #"{"a":{"x":true,"y":null},"z":[1,"a\"b\n\u0001"]}"#)
        #expect(try parse(out) == v)
    }
}

@Suite struct ClientMessageTests {
    func decode(_ s: String) throws -> ClientMessage {
        try Array(s.utf8).withUnsafeBytes { try ClientMessage.decode($0) }
    }

    @Test func decodesASubscribeWithObjectData() throws {
        let m = try decode(#"{"event":"pusher:subscribe","data":{"channel":"news","auth":""}}"#)
        #expect(m.event == "pusher:subscribe")
        #expect(m.data?["channel"]?.string == "news")
        #expect(m.channel == nil)
    }

    @Test func unwrapsProtocolDataSentAsAString() throws {
        let m = try decode(#"{"event":"pusher:subscribe","data":"{\"channel\":\"news\"}"}"#)
        #expect(m.data?["channel"]?.string == "news")
        // A client event's string data is the client's business: left as it is.
        let c = try decode(#"{"event":"client-x","channel":"private-a","data":"{\"k\":1}"}"#)
        #expect(c.data == .string(#"{"k":1}"#))
        #expect(c.channel == "private-a")
    }

    @Test func refusesWhatIsNotAMessage() {
        #expect(throws: ClientMessage.DecodeError.notAnObject) { try decode("[1]") }
        #expect(throws: ClientMessage.DecodeError.noEvent) { try decode(#"{"data":{}}"#) }
        #expect(throws: ClientMessage.DecodeError.noEvent) { try decode(#"{"event":""}"#) }
        #expect(throws: ClientMessage.DecodeError.noEvent) { try decode(#"{"event":5}"#) }
    }
}

@Suite struct JSONWriterStringTests {
    /// The escaping rule, byte by byte (the writer appends runs whole: it must give the same).
    func reference(_ s: String) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "\"")]
        for c in s.utf8 {
            switch c {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), c]
            case 0x0A: out += Array(#"\n"#.utf8)
            case 0x0D: out += Array(#"\r"#.utf8)
            case 0x09: out += Array(#"\t"#.utf8)
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out += Array(#"\u00"#.utf8) + [hex[Int(c >> 4)], hex[Int(c & 15)]]
            default: out.append(c)
            }
        }
        out.append(UInt8(ascii: "\""))
        return out
    }

    @Test func escapesEveryByteThatNeedsItWhereverItIs() throws {
        var specials = (0..<0x20).map { String(UnicodeScalar(UInt8($0))) }
        specials += ["\"", "\\", "é", "😀", "a", "/"]
        for sp in specials {
            for s in [sp, "x" + sp, sp + "x", "ab" + sp + "cd", sp + sp, "abc" + sp + sp + "def" + sp] {
                var out: [UInt8] = [7]  // appends after what is there
                JSONWriter.writeString(s, into: &out)
                #expect(out == [7] + reference(s), "\(Array(s.utf8))")
                #expect(try JSONParser.parse(Array(out.dropFirst())) == .string(s))
            }
        }
        #expect(JSONWriter.string("") == Array(#""""#.utf8))
        let long = String(repeating: "0123456789", count: 7000) + "\"" + String(repeating: "z", count: 70_000)
        #expect(JSONWriter.string(long) == reference(long))
    }

    @Test func escapesEveryASCIIByteAtEveryPositionOfTheWords() {
        // The scan reads eight bytes at a time: each byte value at each offset of three words
        // and a tail, alone and next to a multibyte character.
        for c in 0..<0x80 {
            let ch = String(UnicodeScalar(UInt8(c)))
            for at in 0..<27 {
                for filler in ["a", "é"] {
                    var s = String(repeating: "x", count: at) + ch + String(repeating: "y", count: 26 - at)
                    if filler == "é" { s = "é" + s }
                    #expect(JSONWriter.string(s) == reference(s), "byte \(c) at \(at)")
                    // The parser scans by word too: the text back, and a raw control byte,
                    // quote or backslash where it stands is refused or ends the string there.
                    #expect((try? JSONParser.parse(JSONWriter.string(s))) == .string(s), "byte \(c) at \(at)")
                    let raw = [UInt8(ascii: "\"")] + Array(s.utf8) + [UInt8(ascii: "\"")]
                    let plain = c >= 0x20 && c != 0x22 && c != 0x5C
                    #expect(((try? JSONParser.parse(raw)) == .string(s)) == plain, "raw byte \(c) at \(at)")
                }
            }
        }
    }
}
