import Testing
@testable import HalleyProtocol

/// The framing of pusher-js's HTTP transports (o, a, m, h, c; the xhr_send body).
@Suite struct SockJSFramesTests {
    static let established =
        #"{"event":"pusher:connection_established","data":"{\"socket_id\":\"123.456\",\"activity_timeout\":120}"}"#

    @Test func encodesEveryFrameExactly() {
        #expect(text(SockJS.open) == "o\n")
        #expect(text(SockJS.heartbeat) == "h\n")
        #expect(
            text(SockJS.close(code: 4001, reason: "Application does not exist"))
                == "c[4001,\"Application does not exist\"]\n")
        #expect(text(SockJS.messages([])) == "a[]\n")
        // pusher-js's own example (research notes §1.3): the message as a JSON string.
        #expect(
            text(SockJS.messages([SockJS.quoted(Array(Self.established.utf8))]))
                == #"a["{\"event\":\"pusher:connection_established\",\"data\":\"{\\\"socket_id\\\":\\\"123.456\\\",\\\"activity_timeout\\\":120}\"}"]"#
                + "\n")
        #expect(text(SockJS.message(Array(#"{"a":1}"#.utf8))) == #"m"{\"a\":1}""# + "\n")
        let p = SockJS.prelude(2048)
        #expect(p.count == 2049 && p.dropLast().allSatisfy { $0 == UInt8(ascii: "h") } && p.last == 0x0A)
    }

    @Test func quotedIsASCIIAndDecodesBackToTheSameText() throws {
        let samples = [
            "plain", "", "quote \" backslash \\ slash /", "new\nline\rtab\t", "\u{0}\u{1}\u{1F}\u{7F}",
            "é ✓ 😀 𝄞 ﻿", String(repeating: "ü", count: 300), Self.established,
        ]
        for s in samples {
            let q = SockJS.quoted(Array(s.utf8))
            #expect(q.allSatisfy { $0 >= 0x20 && $0 < 0x7F }, "not printable ASCII: \(s)")
            #expect(try JSONParser.parse(q).string == s)
        }
        // Above U+FFFF: a surrogate pair, lowercase hex.
        #expect(text(SockJS.quoted(Array("😀".utf8))) == #""\ud83d\ude00""#)
        #expect(text(SockJS.quoted(Array("é".utf8))) == #""\u00e9""#)
    }

    @Test(
        arguments: [
            [0xFF], [0xC0, 0x80], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x9C],
            [0x80],
        ] as [[UInt8]])
    func bytesThatAreNotUTF8BecomeReplacementCharacters(_ bad: [UInt8]) throws {
        let q = SockJS.quoted([UInt8(ascii: "x")] + bad + [UInt8(ascii: "y")])
        let s = try #require(try JSONParser.parse(q).string)
        #expect(s.hasPrefix("x\u{FFFD}") && s.hasSuffix("y"))
        #expect(q.allSatisfy { $0 < 0x80 })
    }

    @Test func sendBodies() throws {
        #expect(try SockJS.parseSendBody(Array("[]".utf8)) == [])
        #expect(try SockJS.parseSendBody(Array(" [ ] ".utf8)) == [])
        let sub = #"["{\"event\":\"pusher:subscribe\",\"data\":{\"auth\":\"\",\"channel\":\"foo\"}}"]"#
        #expect(
            try SockJS.parseSendBody(Array(sub.utf8)) == [
                #"{"event":"pusher:subscribe","data":{"auth":"","channel":"foo"}}"#
            ])
        #expect(try SockJS.parseSendBody(Array(#"["a","\u00e9",""]"#.utf8)) == ["a", "é", ""])
        #expect(throws: SockJS.SendBodyError.empty) { try SockJS.parseSendBody([]) }
        #expect(throws: SockJS.SendBodyError.empty) { try SockJS.parseSendBody(Array(" \r\n".utf8)) }
        for bad in [#"{"event":"x"}"#, "[1]", #"["a",{}]"#, "\"a\"", "[[\"a\"]]"] {
            #expect { try SockJS.parseSendBody(Array(bad.utf8)) } throws: { e in
                if case SockJS.SendBodyError.shape = e { return true } else { return false }
            }
        }
        for bad in ["[", "[\"a\"", "[\"a\"]x", "nul"] {
            #expect { try SockJS.parseSendBody(Array(bad.utf8)) } throws: { e in
                if case SockJS.SendBodyError.json = e { return true } else { return false }
            }
        }
    }

    /// A stream as the hub writes it: prelude, open, the handshake, messages in one and in
    /// several elements, a heartbeat, a close.
    static func sampleStream() -> ([UInt8], [SockJSFrame]) {
        let m1 = #"{"event":"e","channel":"c","data":"é \"x\" 😀"}"#
        let m2 = #"{"event":"pusher:pong","data":{}}"#
        var bytes = SockJS.prelude(2048) + SockJS.open
        bytes += SockJS.messages([SockJS.quoted(Array(established.utf8))])
        bytes += SockJS.messages([SockJS.quoted(Array(m1.utf8)), SockJS.quoted(Array(m2.utf8))])
        bytes += SockJS.heartbeat
        bytes += SockJS.message(Array(m2.utf8))
        bytes += Array(#"o{"hostname":"node3.example.com"}"#.utf8) + [0x0A]
        bytes += SockJS.close(code: 4100, reason: "halley: session buffer full")
        let frames: [SockJSFrame] = [
            .heartbeat, .open(nil), .messages([established]), .messages([m1, m2]), .heartbeat, .messages([m2]),
            .open(.object(["hostname": .string("node3.example.com")])),
            .close(code: 4100, reason: "halley: session buffer full"),
        ]
        return (bytes, frames)
    }

    /// Found by the fuzzer (HalleyFuzzSockJS, 2026-12-06): a close code past Int.max trapped.
    @Test func aCloseCodeTooLargeIsABadFrameNotATrap() {
        #expect(throws: SockJSFrameReader.ReadError.self) {
            try SockJSFrameReader.parse(line: Array(#"c[11111111111111111114,"x"]"#.utf8))
        }
        #expect(throws: SockJSFrameReader.ReadError.self) {
            try SockJSFrameReader.parse(line: Array(#"c[65536,"x"]"#.utf8))
        }
        #expect((try? SockJSFrameReader.parse(line: Array(#"c[4100,"x"]"#.utf8))) == .close(code: 4100, reason: "x"))
    }

    @Test func readerGivesTheSameFramesWhole() throws {
        let (bytes, frames) = Self.sampleStream()
        var r = SockJSFrameReader()
        #expect(try r.feed(bytes) == frames)
        #expect(r.atLineBoundary && r.totalBytes == bytes.count)
    }

    @Test func readerGivesTheSameFramesSplitAtEveryOffset() throws {
        let (bytes, frames) = Self.sampleStream()
        for cut in 0...bytes.count {
            var r = SockJSFrameReader()
            var got = try r.feed(bytes[0..<cut])
            got += try r.feed(bytes[cut...])
            #expect(got == frames, "split at \(cut)")
            #expect(r.atLineBoundary)
        }
    }

    @Test func readerGivesTheSameFramesByteByByte() throws {
        let (bytes, frames) = Self.sampleStream()
        var r = SockJSFrameReader()
        var got: [SockJSFrame] = []
        for b in bytes {
            got += try r.feed(CollectionOfOne(b))
            if b != 0x0A { #expect(!r.atLineBoundary) }
        }
        #expect(got == frames)
    }

    @Test func readerRefusesLinesThatAreNotFrames() {
        for bad in ["\n", "x\n", "a{}\n", "a[1]\n", "c[1]\n", "c[\"a\",\"b\"]\n", "m[]\n", "o[\n"] {
            var r = SockJSFrameReader()
            #expect(throws: SockJSFrameReader.ReadError.self) { try r.feed(Array(bad.utf8)) }
        }
    }
}
