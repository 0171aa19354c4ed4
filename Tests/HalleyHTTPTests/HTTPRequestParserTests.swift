import Testing
@testable import HalleyHTTP

/// Feeds `input` to the parser whole, byte by byte, and split at every offset, and requires
/// the same events every time.
func parseEverySplit(_ input: String, limits: HTTPLimits = HTTPLimits()) -> [String] {
    let bytes = Array(input.utf8)
    return bytes.withUnsafeBytes { raw -> [String] in
        let whole = FuzzDriver.run(pieces: [raw], limits: limits)
        let byByte = FuzzDriver.run(
            pieces: (0..<raw.count).map { UnsafeRawBufferPointer(rebasing: raw[$0..<($0 + 1)]) }, limits: limits)
        #expect(byByte == whole, "byte by byte differs")
        for split in 1..<max(1, raw.count) {
            let two = FuzzDriver.run(
                pieces: [
                    UnsafeRawBufferPointer(rebasing: raw[0..<split]), UnsafeRawBufferPointer(rebasing: raw[split...]),
                ], limits: limits)
            #expect(two == whole, "split at \(split) differs")
        }
        return whole
    }
}

func parseOnce(_ input: String, limits: HTTPLimits = HTTPLimits()) -> HTTPRequestHead? {
    var parser = HTTPRequestParser(limits: limits)
    return Array(input.utf8).withUnsafeBytes { raw in
        if case .head(let h, _) = parser.parse(raw) { return h }
        return nil
    }
}

@Suite struct ValidRequests {
    @Test func simpleGet() {
        #expect(
            parseEverySplit("GET / HTTP/1.1\r\nHost: a\r\n\r\n") == [
                "head GET / 1.1 fields=1 cl=- chunked=false keepAlive=true continue=false", "end 0 0",
            ])
    }

    @Test func headersAreCaseInsensitiveAndTrimmed() {
        let h = parseOnce("GET /x?y=1 HTTP/1.1\r\nhOsT:   example.com  \r\nX-Empty:\r\nAccept: a\r\nAccept: b\r\n\r\n")!
        #expect(h.headers["Host"] == "example.com")
        #expect(h.headers["x-empty"] == "")
        #expect(h.headers.values("accept") == ["a", "b"])
        #expect(h.path == "/x")
        #expect(h.query == "y=1")
    }

    /// A field is found by its name in any ASCII case, the first of equal names, and not by a
    /// name that shares a prefix, is longer or shorter, or differs in a byte from 0x80.
    @Test func fieldsAreFoundByNameInAnyCaseOnly() {
        let h = HTTPHeaders([
            ("Host", "h"), ("Authorization", "first"), ("X-Ä", "umlaut"), ("authorizatioN", "second"),
            ("Content-Length", "5"), ("", "empty name"),
        ])
        // The reference: ASCII letters folded, every other byte as is, the first match.
        func reference(_ name: String) -> String? {
            func fold(_ s: String) -> [UInt8] { s.utf8.map { $0 >= 65 && $0 <= 90 ? $0 | 0x20 : $0 } }
            return h.first { fold($0.name) == fold(name) }?.value
        }
        let names = [
            "Host", "HOST", "host", "hosT", "Hos", "Hostx", "Authorization", "AUTHORIZATION", "authorizatio",
            "x-ä", "X-Ä", "x-Ä", "Content-length", "Content-Lengti", "content-length ", "", "Missing",
        ]
        for n in names {
            #expect(h[n] == reference(n), "\(n)")
            #expect(h.valueBytes(n).map { String(decoding: $0, as: UTF8.self) } == reference(n), "\(n)")
        }
        #expect(h["AUTHORIZATION"] == "first")
        #expect(h["x-ä"] == nil)  // "Ä" is not an ASCII letter: not folded
    }

    @Test func pipelinedRequestsInOrder() {
        let r = parseEverySplit(
            "GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        #expect(r.count == 6)
        #expect(r[0].hasPrefix("head GET /a"))
        #expect(r[2].hasPrefix("head POST /b 1.1 fields=2 cl=5"))
        #expect(r[3] == "end 5 \(Array("hello".utf8).reduce(0) { ($0 &* 31) &+ Int($1) })")
        #expect(r[4].hasPrefix("head GET /c"))
    }

    @Test func chunkedBodyWithExtensionsAndTrailers() {
        let r = parseEverySplit(
            "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n6 ; x\r\n world\r\nA\r\n0123456789\r\n0\r\nX-Trailer: yes\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        let body = Array("hello world0123456789".utf8)
        #expect(
            r == [
                "head POST /p 1.1 fields=2 cl=- chunked=true keepAlive=true continue=false",
                "end \(body.count) \(body.reduce(0) { ($0 &* 31) &+ Int($1) })",
                "head GET / 1.1 fields=1 cl=- chunked=false keepAlive=true continue=false", "end 0 0",
            ])
    }

    @Test func transferEncodingIsCaseInsensitive() {
        #expect(parseOnce("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n")?.isChunked == true)
    }

    @Test func http10ClosesUnlessKeepAlive() {
        #expect(parseOnce("GET / HTTP/1.0\r\n\r\n")?.keepAlive == false)
        #expect(parseOnce("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")?.keepAlive == true)
        #expect(parseOnce("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n")?.keepAlive == false)
    }

    @Test func expectContinueOnlyWithABody() {
        #expect(
            parseOnce("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")?
                .expectsContinue == true)
        #expect(parseOnce("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n")?.expectsContinue == false)
    }

    @Test func leadingEmptyLinesAreIgnored() {
        #expect(parseEverySplit("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").first?.hasPrefix("head GET / 1.1") == true)
    }

    @Test func absoluteFormIsReducedToPath() {
        #expect(parseOnce("GET http://example.com/a/b?c HTTP/1.1\r\nHost: example.com\r\n\r\n")?.target == "/a/b?c")
        #expect(parseOnce("GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n")?.target == "/")
        #expect(parseOnce("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")?.target == "*")
    }

    @Test func obsTextIsAllowedInValues() {
        #expect(parseOnce("GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\u{e9}\r\n\r\n")?.headers["x-name"] == "caf\u{e9}")
    }

    @Test func limitsAtTheirEdgeAreAccepted() {
        var limits = HTTPLimits()
        limits.maxRequestLineBytes = 32
        // "GET /" + padding + " HTTP/1.1" is exactly 32 bytes.
        let target = "/" + String(repeating: "a", count: 32 - 14)
        let req = "GET \(target) HTTP/1.1\r\nHost: a\r\n\r\n"
        #expect(parseEverySplit(req, limits: limits).first?.hasPrefix("head GET") == true)
        limits.maxHeaderCount = 2
        #expect(parseOnce("GET / HTTP/1.1\r\nHost: a\r\nB: c\r\n\r\n", limits: limits) != nil)
    }

    @Test func bodyExactlyAtTheLimit() {
        var limits = HTTPLimits()
        limits.maxBodyBytes = 10
        #expect(
            parseEverySplit("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789", limits: limits).last?
                .hasPrefix("end 10") == true)
        #expect(
            parseEverySplit(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n",
                limits: limits
            ).last?.hasPrefix("end 10") == true)
    }

    @Test func incompleteHeadConsumesNothing() {
        var parser = HTTPRequestParser()
        Array("GET / HTTP/1.1\r\nHost: a\r\n".utf8).withUnsafeBytes { raw in
            guard case .needMore(let c) = parser.parse(raw) else { Issue.record("expected needMore"); return }
            #expect(c == 0)
        }
        #expect(!parser.isIdle)
    }
}

@Suite struct MalformedRequests {
    static let cases: [(String, String, Int)] = [
        ("bare LF in request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
        ("bare LF in header", "GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
        ("bare LF only", "GET / HTTP/1.1\nHost: a\n\n", 400),
        ("bare CR in value", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  b\r\n\r\n", 400),
        ("space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        ("empty header name", "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400),
        ("no colon", "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400),
        ("NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{0}b\r\n\r\n", 400),
        ("DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{7f}b\r\n\r\n", 400),
        ("control char in name", "GET / HTTP/1.1\r\nHost: a\r\nX\u{1}Y: b\r\n\r\n", 400),
        ("CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("TE and CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
        (
            "duplicate CL same value",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400
        ),
        ("conflicting CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        ("CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 400),
        ("CL not a number", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400),
        ("CL negative", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        ("CL plus sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400),
        ("CL too many digits", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1234567890123456789012\r\n\r\n", 400),
        ("TE gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        ("TE gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        ("TE chunked, gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        (
            "TE chunked twice",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400
        ),
        ("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("missing Host", "GET / HTTP/1.1\r\n\r\n", 400),
        ("duplicate Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
        ("HTTP/1.x", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400),
        ("lowercase http", "GET / http/1.1\r\nHost: a\r\n\r\n", 400),
        ("no version", "GET /\r\nHost: a\r\n\r\n", 400),
        ("two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("relative target", "GET a HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("asterisk with GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("bad method char", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("garbage", "\u{16}\u{3}\u{1}\u{0}\u{a5}\u{1}\u{0}\u{0}\u{a1}\u{3}\u{3}\r\n\r\n", 400),
        ("Expect other", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\na", 417),
        ("bad chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        ("empty chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", 400),
        (
            "chunk without CRLF",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", 400
        ),
        (
            "chunk size bare LF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
            400
        ),
        (
            "chunk size overflow",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n", 413
        ),
        (
            "trailer obs-fold",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n", 400
        ),
    ]

    @Test(arguments: 0..<cases.count)
    func refusedWithExactStatus(_ i: Int) {
        let (name, input, status) = Self.cases[i]
        let log = parseEverySplit(input)
        #expect(log.last == "error \(status)", "\(name): \(log)")
    }

    @Test func requestLineTooLong() {
        var limits = HTTPLimits()
        limits.maxRequestLineBytes = 32
        let long = "GET /" + String(repeating: "a", count: 40) + " HTTP/1.1\r\nHost: a\r\n\r\n"
        #expect(parseEverySplit(long, limits: limits).last == "error 414")
        // Refused before the line ends: a client cannot hold the hub with an endless line.
        #expect(parseEverySplit("GET /" + String(repeating: "a", count: 40), limits: limits).last == "error 414")
    }

    @Test func headTooLarge() {
        var limits = HTTPLimits()
        limits.maxHeaderBytes = 64
        let big = "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "b", count: 60) + "\r\n\r\n"
        #expect(parseEverySplit(big, limits: limits).last == "error 431")
        #expect(
            parseEverySplit("GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "b", count: 60), limits: limits).last
                == "error 431")
    }

    @Test func headLimitsAgreeWithAByteAtATimeModel() {
        // The scan jumps from LF to LF; the answers must be those of a byte-at-a-time scan:
        // 414 when the request line is longer than its limit (431 when the head limit comes
        // first), else 431 when the head is longer than its limit, else the head. Both limits
        // the smaller in turn; lines and heads a few bytes either side of them; every split.
        for (maxLine, maxHead) in [(20, 40), (30, 25), (30, 31), (30, 32), (24, 60)] {
            var limits = HTTPLimits()
            limits.maxRequestLineBytes = maxLine
            limits.maxHeaderBytes = maxHead
            for lineLength in (maxLine - 3)...(maxLine + 3) {
                for pad in [0, 1, 2, 10, 30] {
                    // "GET " + target + " HTTP/1.1": 14 bytes with a one-byte target.
                    let target = "/" + String(repeating: "a", count: lineLength - 14)
                    let head = "GET \(target) HTTP/1.1\r\nHost: a\r\nX: \(String(repeating: "b", count: pad))\r\n\r\n"
                    let log = parseEverySplit(head, limits: limits)
                    let what = "line \(lineLength) head \(head.utf8.count) limits \(maxLine)/\(maxHead): \(log)"
                    if lineLength > maxLine {
                        #expect(log.last == (maxHead >= maxLine + 1 ? "error 414" : "error 431"), "\(what)")
                    } else if head.utf8.count > maxHead {
                        #expect(log.last == "error 431", "\(what)")
                    } else {
                        #expect(log.first?.hasPrefix("head GET") == true, "\(what)")
                    }
                }
            }
        }
    }

    @Test func tokenCharactersAreRFC9110s() {
        let tchar = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        for c in 0...255 { #expect(HTTPChars.isToken(UInt8(c)) == tchar.contains(UInt8(c)), "byte \(c)") }
    }

    @Test func everyByteValueAtEveryPositionOfAHeaderValue() {
        // Values are checked eight bytes at a time: each byte value at each offset of a 20-byte
        // value (two words and a tail) is refused exactly when RFC 9110 §5.5 refuses it.
        for c in 0...255 {
            for at in 0..<20 {
                var head = Array("GET / HTTP/1.1\r\nHost: a\r\nX: ".utf8)
                var value = [UInt8](repeating: UInt8(ascii: "v"), count: 20)
                value[at] = UInt8(c)
                head += value + Array("\r\n\r\n".utf8)
                var parser = HTTPRequestParser()
                let r = head.withUnsafeBytes { parser.parse($0) }
                // CR and LF end the line early (a bare CR, or a line without a colon); a space
                // or HTAB at either end is trimmed as optional whitespace.
                let ok = c == 9 || (c >= 32 && c != 127)
                switch r {
                case .head: #expect(ok, "byte \(c) at \(at) accepted")
                case .error: #expect(!ok, "byte \(c) at \(at) refused")
                default: Issue.record("byte \(c) at \(at): \(r)")
                }
            }
        }
    }

    @Test func everyByteValueAtEveryPositionOfTheTarget() {
        // The target is scanned eight bytes at a time: each byte value at each offset of a
        // 21-byte target (two words and a tail after the slash) is accepted exactly when it is
        // visible ASCII, and the target kept byte for byte.
        for c in 0...255 {
            for at in 0..<20 {
                var target = [UInt8](repeating: UInt8(ascii: "t"), count: 20)
                target[at] = UInt8(c)
                let head = Array("GET /".utf8) + target + Array(" HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
                var parser = HTTPRequestParser()
                let r = head.withUnsafeBytes { parser.parse($0) }
                let ok = c > 32 && c < 127
                switch r {
                case .head(let h, _):
                    #expect(ok, "byte \(c) at \(at) accepted")
                    #expect(Array(h.target.utf8) == [UInt8(ascii: "/")] + target)
                case .error: #expect(!ok, "byte \(c) at \(at) refused")
                default: Issue.record("byte \(c) at \(at): \(r)")
                }
            }
        }
    }

    @Test func tooManyHeaders() {
        var limits = HTTPLimits()
        limits.maxHeaderCount = 3
        #expect(
            parseEverySplit("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", limits: limits).last
                == "error 431")
    }

    @Test func bodyTooLarge() {
        var limits = HTTPLimits()
        limits.maxBodyBytes = 10
        #expect(
            parseEverySplit("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", limits: limits).last
                == "error 413")
        #expect(
            parseEverySplit(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n5\r\n", limits: limits
            ).last == "error 413")
    }

    @Test func parserStaysFailed() {
        var parser = HTTPRequestParser()
        Array("GET / HTTP/1.1\nHost: a\r\n\r\n".utf8).withUnsafeBytes { raw in
            guard case .error = parser.parse(raw) else { Issue.record("expected error"); return }
            guard case .error(let e) = parser.parse(raw) else { Issue.record("expected error again"); return }
            #expect(e.status == 400)
        }
    }
}

@Suite struct HTTPDateTests {
    @Test func formatsIMFFixdate() {
        #expect(HTTPDate.format(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT")
    }

    @Test func parsesWhatItFormats() {
        #expect(HTTPDate.parse("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777)
        #expect(HTTPDate.parse("Sunday, 06-Nov-94 08:49:37 GMT") == nil)
    }
}
