import Testing
@testable import HalleyProtocol

/// RESP: every type whole, then byte by byte and split at every offset (the same values
/// whatever the split), pipelined replies, the errors and every limit broken by one.
@Suite struct RESPTests {
    func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    /// Every value of `input`, fed whole.
    func parse(_ input: [UInt8], limits: RESPParser.Limits = .init()) throws(RESPError) -> [RESPValue] {
        var p = RESPParser(limits: limits)
        p.append(input)
        var out: [RESPValue] = []
        while let v = try p.next() { out.append(v) }
        #expect(p.pendingBytes == 0)
        return out
    }

    /// Where each value of `input` ends (read whole).
    func ends(_ input: [UInt8]) throws -> [Int] {
        var p = RESPParser()
        var out: [Int] = []
        p.append(input)
        while try p.next() != nil { out.append(input.count - p.pendingBytes) }
        return out
    }

    /// The values of `input` fed in two pieces split at every offset, and byte by byte: all
    /// must equal `want`, and none may come before its last byte.
    func checkEverySplit(_ input: [UInt8], _ want: [RESPValue]) throws {
        let ends = try ends(input)
        for cut in 0...input.count {
            var p = RESPParser()
            var got: [RESPValue] = []
            p.append(Array(input[..<cut]))
            while let v = try p.next() { got.append(v) }
            #expect(got.count == ends.filter { $0 <= cut }.count, "split at \(cut): a value came before its last byte")
            p.append(Array(input[cut...]))
            while let v = try p.next() { got.append(v) }
            #expect(got == want, "split at \(cut)")
        }
        var p = RESPParser()
        var got: [RESPValue] = []
        for (k, b) in input.enumerated() {
            p.append([b])
            while let v = try p.next() { got.append(v) }
            #expect(got.count == ends.filter { $0 <= k + 1 }.count, "byte \(k)")
        }
        #expect(got == want, "byte by byte")
        #expect(p.pendingBytes == 0)
    }

    static let cases: [(String, RESPValue)] = [
        ("+OK\r\n", .simple("OK")),
        ("+\r\n", .simple("")),
        ("-ERR unknown command 'FOO'\r\n", .error("ERR unknown command 'FOO'")),
        (":0\r\n", .integer(0)),
        (":-42\r\n", .integer(-42)),
        (":+7\r\n", .integer(7)),
        (":9223372036854775807\r\n", .integer(.max)),
        (":-9223372036854775808\r\n", .integer(.min)),
        ("$0\r\n\r\n", .bulk([])),
        ("$5\r\nhello\r\n", .bulk(Array("hello".utf8))),
        ("$4\r\na\r\nb\r\n", .bulk([97, 13, 10, 98])),  // binary-safe: CR LF inside
        ("$-1\r\n", .null),
        ("*-1\r\n", .null),
        ("_\r\n", .null),
        ("*0\r\n", .array([])),
        ("*2\r\n$3\r\nfoo\r\n:1\r\n", .array([.bulk(Array("foo".utf8)), .integer(1)])),
        ("*2\r\n*1\r\n+a\r\n*0\r\n", .array([.array([.simple("a")]), .array([])])),
        ("#t\r\n", .boolean(true)),
        ("#f\r\n", .boolean(false)),
        (",1.5\r\n", .double(1.5)),
        (",-0.25e2\r\n", .double(-25)),
        (",inf\r\n", .double(.infinity)),
        (",-inf\r\n", .double(-.infinity)),
        ("(3492890328409238509324850943850943825024385\r\n", .bigNumber("3492890328409238509324850943850943825024385")),
        ("!21\r\nSYNTAX invalid syntax\r\n", .error("SYNTAX invalid syntax")),
        ("=15\r\ntxt:Some string\r\n", .verbatim(format: "txt", text: Array("Some string".utf8))),
        (
            "%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n",
            .map([.simple("first"), .integer(1), .simple("second"), .integer(2)])
        ),
        ("~2\r\n+orange\r\n+apple\r\n", .set([.simple("orange"), .simple("apple")])),
        (
            ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
            .push([.bulk(Array("message".utf8)), .bulk(Array("ch".utf8)), .bulk(Array("hi".utf8))])
        ),
        // Attributes describe the value after them: skipped, that value returned.
        ("|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n:2039\r\n", .array([.integer(2039)])),
    ]

    @Test func everyTypeWholeAndSplitAtEveryOffset() throws {
        for (text, want) in Self.cases {
            #expect(try parse(bytes(text)) == [want], "\(text.debugDescription)")
            try checkEverySplit(bytes(text), [want])
        }
        // NaN is not equal to itself: checked apart.
        guard case .double(let d)? = try parse(bytes(",nan\r\n")).first else { Issue.record("nan"); return }
        #expect(d.isNaN)
    }

    @Test func pipelinedRepliesComeInOrder() throws {
        let all = Self.cases.map(\.0).joined()
        try checkEverySplit(bytes(all), Self.cases.map(\.1))
    }

    /// What the multi-node hub will read: an XRANGE reply (entries of id and field list)
    /// and pub/sub messages in RESP2 and RESP3.
    @Test func repliesOfTheCommandsTheHubUses() throws {
        let xrange =
            "*2\r\n*2\r\n$15\r\n1700000000000-0\r\n*4\r\n$1\r\no\r\n$1\r\n1\r\n$1\r\nm\r\n$11\r\n{\"event\":1}\r\n"
            + "*2\r\n$15\r\n1700000000001-0\r\n*4\r\n$1\r\no\r\n$1\r\n2\r\n$1\r\nm\r\n$2\r\n{}\r\n"
        let v = try #require(try parse(bytes(xrange)).first)
        let entries = try #require(v.elements)
        #expect(entries.count == 2)
        #expect(entries[0].elements?[0].string == "1700000000000-0")
        #expect(entries[0].elements?[1].elements?.map { $0.string ?? "" } == ["o", "1", "m", "{\"event\":1}"])
        let resp2 = "*3\r\n$7\r\nmessage\r\n$7\r\nchannel\r\n$5\r\nhello\r\n"
        let resp3 = ">3\r\n$7\r\nmessage\r\n$7\r\nchannel\r\n$5\r\nhello\r\n"
        for text in [resp2, resp3] {
            #expect(try parse(bytes(text)).first?.elements?.map { $0.string ?? "" } == ["message", "channel", "hello"])
        }
    }

    @Test func encodedValuesParseBack() throws {
        var all: [UInt8] = []
        for (_, v) in Self.cases.dropLast() {  // the attribute case has no encoding of its own
            #expect(try parse(RESP.encode(v)) == [v] || v == .null)
            RESP.encode(v, into: &all)
        }
        #expect(try parse(all).count == Self.cases.count - 1)
    }

    @Test func commandsAreArraysOfBulkStrings() throws {
        #expect(RESP.command("PING") == bytes("*1\r\n$4\r\nPING\r\n"))
        #expect(RESP.command("SET", "k", "") == bytes("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"))
        let binary: [UInt8] = [0, 13, 10, 255]
        let c = RESP.command([Array("PUBLISH".utf8), Array("é".utf8), binary])
        #expect(try parse(c) == [.array([.bulk(Array("PUBLISH".utf8)), .bulk(Array("é".utf8)), .bulk(binary)])])
        var pipeline: [UInt8] = []
        RESP.appendCommand([Array("MULTI".utf8)], to: &pipeline)
        RESP.appendCommand([Array("EXEC".utf8)], to: &pipeline)
        #expect(try parse(pipeline).count == 2)
    }

    @Test func malformedInputIsRefused() {
        let bad: [(String, RESPError)] = [
            ("?x\r\n", .unknownType(UInt8(ascii: "?"))),
            ("+OK\n", .badLineEnd),
            ("+O\rK\r\n", .badLineEnd),
            (":12a\r\n", .badNumber),
            (":\r\n", .badNumber),
            (":-\r\n", .badNumber),
            (":9223372036854775808\r\n", .badNumber),
            (":-9223372036854775809\r\n", .badNumber),
            ("$3\r\nabcd\r\n", .badLineEnd),  // the data is longer than its length
            ("$-2\r\n", .badLength),
            ("!-1\r\n", .badLength),  // null only for $ and *
            ("%-1\r\n", .badLength),
            ("$x\r\n", .badNumber),
            ("#x\r\n", .badValue),
            ("#tt\r\n", .badValue),
            (",1.5x\r\n", .badValue),
            (",0x1p3\r\n", .badValue),
            (", 1\r\n", .badValue),
            (",\r\n", .badValue),
            ("(12a\r\n", .badValue),
            ("(\r\n", .badValue),
            ("_x\r\n", .badValue),
            ("=3\r\ntxt\r\n", .badValue),  // no `:` after the format
            ("=5\r\nt\u{e9}:a\r\n", .badValue),  // a format that is not three ASCII letters
            ("*1\r\n?\r\n", .unknownType(UInt8(ascii: "?"))),
        ]
        for (text, want) in bad {
            #expect(throws: want, "\(text.debugDescription)") { try parse(bytes(text)) }
        }
    }

    @Test func everyLimitBrokenByOne() throws {
        var l = RESPParser.Limits()
        l.maxLineBytes = 8
        l.maxBulkBytes = 10
        l.maxElements = 4
        l.maxDepth = 3
        #expect(try parse(bytes("+12345678\r\n"), limits: l) == [.simple("12345678")])
        #expect(throws: RESPError.tooLarge) { try parse(bytes("+123456789\r\n"), limits: l) }
        #expect(throws: RESPError.tooLarge) { try parse(bytes("+123456789"), limits: l) }  // before its end came
        #expect(try parse(bytes("$10\r\n0123456789\r\n"), limits: l) == [.bulk(Array("0123456789".utf8))])
        #expect(throws: RESPError.tooLarge) { try parse(bytes("$11\r\n"), limits: l) }  // refused at its header
        #expect(try parse(bytes("*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n"), limits: l).count == 1)
        #expect(throws: RESPError.tooLarge) { try parse(bytes("*5\r\n"), limits: l) }
        #expect(try parse(bytes("%2\r\n:1\r\n:2\r\n:3\r\n:4\r\n"), limits: l).count == 1)
        #expect(throws: RESPError.tooLarge) { try parse(bytes("%3\r\n"), limits: l) }
        #expect(try parse(bytes("*1\r\n*1\r\n*1\r\n:1\r\n"), limits: l) == [.array([.array([.array([.integer(1)])])])])
        #expect(throws: RESPError.tooDeep) { try parse(bytes("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n"), limits: l) }
        // Attributes count as levels: a chain of them cannot run the stack down.
        #expect(try parse(bytes("|0\r\n|0\r\n|0\r\n:1\r\n"), limits: l) == [.integer(1)])
        #expect(throws: RESPError.tooDeep) { try parse(bytes(String(repeating: "|0\r\n", count: 100_000) + ":1\r\n")) }
        // What waits for a value's end is bounded.
        l.maxBufferedBytes = 16
        l.maxBulkBytes = 100
        var p = RESPParser(limits: l)
        p.append(bytes("$100\r\n0123456789"))
        #expect(try p.next() == nil)
        p.append(bytes("0123456789"))
        #expect(throws: RESPError.tooLarge) { try p.next() }
    }

    /// A type byte that is no RESP type is refused at once, not after a line's worth.
    @Test func anUnknownTypeIsRefusedAtItsFirstByte() {
        var p = RESPParser()
        p.append(bytes("x"))
        #expect(throws: RESPError.unknownType(UInt8(ascii: "x"))) { try p.next() }
    }

    /// The buffer drops what was taken while a value is still coming (the 4 KiB compaction),
    /// and a huge reply's buffer does not stay after it.
    @Test func compactionKeepsAPartialValue() throws {
        var p = RESPParser()
        let one = RESP.command("PUBLISH", "channel", String(repeating: "x", count: 100))
        var stream: [UInt8] = []
        for _ in 0..<200 { stream += one }
        var got = 0
        var k = 0
        while k < stream.count {  // 333-byte pieces: values always straddle them
            let piece = Array(stream[k..<min(stream.count, k + 333)])
            p.append(piece)
            while try p.next() != nil { got += 1 }
            k += 333
        }
        #expect(got == 200 && p.pendingBytes == 0)
        p.append(RESP.encode(.bulk([UInt8](repeating: 1, count: 4 << 20))))
        #expect(try p.next() != nil)
        p.append(bytes("+OK\r\n"))
        #expect(try p.next() == .simple("OK") && p.buffer.capacity <= 1 << 20)
    }

    /// A long run of values through one parser: what was taken is let go of (the buffer does
    /// not grow with the stream).
    @Test func theBufferLetsGoOfWhatWasTaken() throws {
        var p = RESPParser()
        let one = RESP.command("PUBLISH", "channel", String(repeating: "x", count: 100))
        for _ in 0..<10_000 {
            p.append(one)
            #expect(try p.next() != nil)
        }
        #expect(p.pendingBytes == 0 && p.buffer.capacity < 64 * 1024)
    }
}
