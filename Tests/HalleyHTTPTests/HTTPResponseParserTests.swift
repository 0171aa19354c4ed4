import Testing
@testable import HalleyHTTP

/// What the parser made of `pieces`: "STATUS REASON 1.MINOR [fields] body=…", "incomplete",
/// or "error: …". With `eof`, the connection closes after the last piece.
func readResponse(_ pieces: [[UInt8]], eof: Bool, head: Bool, limits: HTTPResponseParser.Limits) -> String {
    var p = HTTPResponseParser(limits: limits, requestWasHead: head)
    func show(_ r: HTTPClientResponse) -> String {
        let fields = r.headers.map { "\($0.name)=\($0.value)" }.joined(separator: ",")
        return "\(r.status) \(r.reason) 1.\(r.minorVersion) [\(fields)] body=\(String(decoding: r.body, as: UTF8.self))"
    }
    do throws(HTTPResponseParseError) {
        for piece in pieces {
            if let r = try p.feed(piece) { return show(r) }
        }
        if eof { return show(try p.finish()) }
        return "incomplete"
    } catch {
        return "error: \(error)"
    }
}

/// Feeds `input` whole, byte by byte, and split in two at every offset; every way must give
/// the same result, which is returned.
func responseEverySplit(
    _ input: String, eof: Bool = false, head: Bool = false,
    limits: HTTPResponseParser.Limits = HTTPResponseParser.Limits()
) -> String {
    let b = Array(input.utf8)
    let whole = readResponse([b], eof: eof, head: head, limits: limits)
    #expect(readResponse(b.map { [$0] }, eof: eof, head: head, limits: limits) == whole, "byte by byte differs")
    for split in 1..<max(1, b.count) {
        let two = readResponse([Array(b[..<split]), Array(b[split...])], eof: eof, head: head, limits: limits)
        #expect(two == whole, "split at \(split) differs")
    }
    return whole
}

@Suite struct HTTPResponseParserTests {
    @Test func contentLengthBody() {
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A:  b c \r\n\r\nhello")
                == "200 OK 1.1 [Content-Length=5,X-A=b c] body=hello")
    }

    @Test func bytesAfterTheResponseAreIgnored() {
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 500 No\r\n\r\n")
                == "200 OK 1.1 [Content-Length=2] body=hi")
    }

    @Test func emptyBodyAndNoReason() {
        #expect(responseEverySplit("HTTP/1.1 204\r\n\r\n") == "204  1.1 [] body=")
        #expect(responseEverySplit("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n") == "200  1.1 [Content-Length=0] body=")
    }

    @Test func bareLineFeedsAreAccepted() {
        #expect(
            responseEverySplit("HTTP/1.0 202 Accepted\nContent-Length: 3\n\nabc")
                == "202 Accepted 1.0 [Content-Length=3] body=abc")
    }

    @Test func chunkedBodyWithExtensionsAndTrailers() {
        let r =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA \r\n, world!!!\r\n0\r\nX-Trailer: t\r\n\r\n"
        #expect(responseEverySplit(r) == "200 OK 1.1 [Transfer-Encoding=chunked] body=hello, world!!!")
    }

    @Test func chunkedWinsOverContentLength() {
        let r = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        #expect(responseEverySplit(r).hasSuffix("body=ok"))
    }

    @Test func bodyDelimitedByClose() {
        #expect(
            responseEverySplit("HTTP/1.0 500 Internal Server Error\r\n\r\noops", eof: true)
                == "500 Internal Server Error 1.0 [] body=oops")
        #expect(responseEverySplit("HTTP/1.0 500 Internal Server Error\r\n\r\noops") == "incomplete")
    }

    @Test func interimResponsesAreSkipped() {
        #expect(
            responseEverySplit(
                "HTTP/1.1 100 Continue\r\nX-I: 1\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
                == "201 Created 1.1 [Content-Length=0] body=")
    }

    @Test func headAnd304HaveNoBody() {
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", head: true)
                == "200 OK 1.1 [Content-Length=10] body=")
        #expect(
            responseEverySplit("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")
                == "304 Not Modified 1.1 [Content-Length=10] body=")
    }

    @Test func truncatedResponsesFailAtClose() {
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", eof: true)
                == "error: connection closed before the response ended")
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", eof: true)
                == "error: connection closed before the response ended")
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nContent-Le", eof: true)
                == "error: connection closed before the response ended")
        #expect(
            readResponse([], eof: true, head: false, limits: .init())
                == "error: connection closed before the response ended")
    }

    @Test func malformedResponses() {
        #expect(responseEverySplit("HTTP/2 200 OK\r\n\r\n") == "error: malformed response: bad status line")
        #expect(responseEverySplit("HTTP/1.1 2x0 OK\r\n\r\n") == "error: malformed response: bad status code")
        #expect(responseEverySplit("HTTP/1.1 099 OK\r\n\r\n") == "error: malformed response: bad status code")
        #expect(responseEverySplit("HTTP/1.1 200OK\r\n\r\n") == "error: malformed response: bad status line")
        #expect(responseEverySplit("ICY 200 OK\r\n\r\n") == "error: malformed response: bad status line")
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nNo colon\r\n\r\n") == "error: malformed response: bad field line")
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n") == "error: malformed response: bad field name")
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n")
                == "error: malformed response: bad field line")
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n")
                == "error: malformed response: bad Content-Length")
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                == "error: malformed response: bad Content-Length")
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok")
                == "200 OK 1.1 [Content-Length=2, 2] body=ok")
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                == "error: malformed response: bad chunk size")
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n")
                == "error: malformed response: chunk data not followed by CRLF")
    }

    @Test func limits() {
        var l = HTTPResponseParser.Limits()
        l.maxHeadBytes = 40
        l.maxBodyBytes = 4
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfour", limits: l)
                == "200 OK 1.1 [Content-Length=4] body=four")
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX: 1\r\n\r\nfour", limits: l)
                == "error: response head too large")
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfive!", limits: l)
                == "error: response body too large")
        l.maxHeadBytes = 100
        #expect(
            responseEverySplit(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", limits: l)
                == "error: response body too large")
        #expect(
            responseEverySplit("HTTP/1.1 200 OK\r\n\r\nfive!", eof: true, limits: l) == "error: response body too large"
        )
        let longChunkLine =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;" + String(repeating: "x", count: 1100) + "\r\n"
        #expect(
            readResponse([Array(longChunkLine.utf8)], eof: false, head: false, limits: .init())
                == "error: malformed response: chunk size line too long")
    }
}

@Suite struct HTTPURLTests {
    func parse(_ s: String) -> String {
        do throws(HTTPURL.ParseError) {
            let u = try HTTPURL(s)
            return "\(u.host) \(u.port) \(u.target) \(u.hostField)"
        } catch {
            return "error: \(error)"
        }
    }

    @Test func validURLs() {
        #expect(parse("http://127.0.0.1:9000/hook?x=1") == "127.0.0.1 9000 /hook?x=1 127.0.0.1:9000")
        #expect(parse("http://example.com") == "example.com 80 / example.com")
        #expect(parse("HTTP://example.com:80/a") == "example.com 80 /a example.com")
        #expect(parse("http://[::1]:8080/h") == "::1 8080 /h [::1]:8080")
        #expect(parse("http://[::1]") == "::1 80 / [::1]")
        #expect(parse("http://h?q") == "h 80 /?q h")
    }

    @Test func refusedURLs() {
        #expect(parse("https://example.com/") == "error: https is not supported yet (no TLS client): use http://")
        #expect(parse("ftp://example.com/") == "error: expected http://host[:port]/path")
        #expect(parse("http:///path") == "error: expected a host")
        #expect(parse("http://h:0/") == "error: expected a port from 1 to 65535")
        #expect(parse("http://h:65536/") == "error: expected a port from 1 to 65535")
        #expect(parse("http://h:/") == "error: expected a port from 1 to 65535")
        #expect(parse("http://u:p@h/") == "error: user information in a URL is not supported")
        #expect(parse("http://h/a b") == "error: expected a URL without spaces or control characters")
        #expect(parse("http://h/#x") == "error: a URL with a #fragment")
        #expect(parse("http://[::1/") == "error: unclosed [ in the host")
        #expect(parse("http://[h]/") == "error: expected an IPv6 address in brackets")
    }

    @Test func requestBytes() throws {
        let u = try HTTPURL("http://127.0.0.1:9000/hook")
        let r = u.request(method: "POST", fields: [("Content-Type", "application/json")], body: Array("{}".utf8))
        #expect(
            String(decoding: r, as: UTF8.self)
                == "POST /hook HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
    }
}
