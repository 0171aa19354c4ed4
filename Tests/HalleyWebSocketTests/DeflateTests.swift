import Testing
import HalleyCore
@testable import HalleyWebSocket

@Suite struct DeflateTests {
    /// RFC 7692 §7.2.3: server frames, masked here as a client would send them.
    func fromExample(_ frame: [UInt8]) -> [UInt8] {
        // Split the example frame (header 2 bytes, short payloads) and mask it.
        let b0 = frame[0]
        let payload = Array(frame[2...])
        return clientFrame(b0 & 0x0F, payload, fin: b0 & 0x80 != 0, rsv1: b0 & 0x40 != 0)
    }

    @Test func rfc7692Examples() {
        let hello = Array("Hello".utf8)
        let inflater = { Inflater(resetAfterMessage: false) }
        // §7.2.3.1 a message in one compressed frame.
        #expect(
            readEverySplit(fromExample([0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]), makeInflater: inflater)
                == [.text(hello)])
        // §7.2.3.2 the same, in two fragments.
        #expect(
            readEverySplit(
                fromExample([0x41, 0x03, 0xf2, 0x48, 0xcd]) + fromExample([0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00]),
                makeInflater: inflater) == [.text(hello)])
        // §7.2.3.3 two messages sharing the LZ77 window (context takeover).
        #expect(
            readEverySplit(
                fromExample([0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00])
                    + fromExample([0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00]), makeInflater: inflater) == [
                    .text(hello), .text(hello),
                ])
        // §7.2.3.4 a stored (uncompressed) block.
        #expect(
            readEverySplit(
                fromExample([0xc1, 0x0b, 0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00]),
                makeInflater: inflater) == [.text(hello)])
        // §7.2.3.5 a final block (BFINAL set).
        #expect(
            readEverySplit(
                fromExample([0xc1, 0x08, 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]), makeInflater: inflater) == [
                    .text(hello)
                ])
    }

    /// zlib's state is made by the first compressed message, not by the handshake: a
    /// connection that only receives holds none. Context takeover still spans messages.
    @Test func inflaterStateIsMadeByTheFirstMessage() {
        let inf = Inflater(resetAfterMessage: false)
        #expect(!inf.hasState)
        let plain = Array("plain".utf8)
        #expect(read([clientFrame(0x1, plain)], inflater: inf) == [.text(plain)])
        #expect(!inf.hasState)
        let hello = Array("Hello".utf8)
        let two = [
            fromExample([0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
            fromExample([0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00]),
        ]
        #expect(read(two, inflater: inf) == [.text(hello), .text(hello)])
        #expect(inf.hasState)
    }

    @Test func deflaterMatchesTheRFCExample() {
        let d = Deflater()  // compress returns its own buffer: keep it alive while reading
        let out = Array(Array("Hello".utf8).withUnsafeBytes { d.compress($0) })
        #expect(out == [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00])
        // No context takeover: the same message compresses the same way again.
        let again = Array(Array("Hello".utf8).withUnsafeBytes { d.compress($0) })
        #expect(again == out)
    }

    @Test func roundTripThroughSharedInflater() {
        let d = Deflater(windowBits: 10)
        let shared = Inflater(resetAfterMessage: true)
        for n in [0, 1, 100, 5000, 70000] {
            let msg = (0..<n).map { UInt8(truncatingIfNeeded: ($0 * 13) % 251) }
            let z = Array(msg.withUnsafeBytes { d.compress($0) })
            let got = read([clientFrame(2, z, rsv1: true)], inflater: shared)
            #expect(got == [.binary(msg)], "n=\(n)")
        }
    }

    /// A shared compressed prefix (sync flush kept) plus a per-connection stored tail reads as
    /// prefix + tail, also for a receiver that keeps its inflater between messages.
    @Test func storedTailAfterASharedPrefix() {
        let prefix = Array(#"{"event":"e","channel":"news","data":"hello hello hello hello hello""#.utf8)
        let d = Deflater()
        var body = prefix.withUnsafeBytes { Array(d.compress($0)) }
        body += [0, 0, 0xFF, 0xFF]
        let tail = Array(#","halley:seq":42}"#.utf8)
        var out = [UInt8](repeating: 0, count: tail.count + 6)
        let n = tail.withUnsafeBytes { t in
            out.withUnsafeMutableBytes { PerMessageDeflate.storedTail(t, into: $0.baseAddress!) }
        }
        #expect(n == tail.count + 6)
        #expect(Array(out[0..<5]) == [0x00, UInt8(tail.count), 0x00, ~UInt8(tail.count), 0xFF])
        #expect(out.last == 0)
        let frame = clientFrame(1, body + out, rsv1: true)
        let expected = Seen.text(prefix + tail)
        #expect(
            readEverySplit(frame + frame, makeInflater: { Inflater(resetAfterMessage: false) }) == [expected, expected])
        #expect(readEverySplit(frame, makeInflater: { Inflater(resetAfterMessage: true) }) == [expected])
    }

    @Test func deflateBombIsRefused() {
        var limits = WebSocketReader.Limits()
        limits.maxMessageBytes = 1 << 20
        let zeros = [UInt8](repeating: 0, count: 10 << 20)
        let deflater = Deflater()
        let z = Array(zeros.withUnsafeBytes { deflater.compress($0) })
        #expect(z.count < 20_000)  // 10 MiB in a few KiB
        #expect(
            read([clientFrame(2, z, rsv1: true)], limits: limits, inflater: Inflater(resetAfterMessage: true)) == [
                .fail(1009)
            ])
    }

    @Test func corruptDeflateDataIs1007() {
        #expect(
            read([clientFrame(2, [0xff, 0xff, 0xff, 0xff], rsv1: true)], inflater: Inflater(resetAfterMessage: true))
                == [.fail(1007)])
    }

    @Test func rsv1OnContinuationIsAProtocolError() {
        let bytes = clientFrame(1, [0xf2, 0x48], fin: false, rsv1: true) + clientFrame(0, [0xcd], rsv1: true)
        #expect(read([bytes], inflater: Inflater(resetAfterMessage: true)) == [.fail(1002)])
    }

    @Test func negotiation() {
        #expect(PerMessageDeflate.negotiate([]) == nil)
        #expect(PerMessageDeflate.negotiate(["x-webkit-deflate-frame"]) == nil)
        // A browser's offer: the client is asked not to keep its context (the hub then needs
        // no inflater per connection), unless the hub lets it.
        let browser = ["permessage-deflate; client_max_window_bits"]
        #expect(
            PerMessageDeflate.negotiate(browser)?.responseHeader
                == "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        let kept = PerMessageDeflate.negotiate(browser, clientContextTakeover: true)
        #expect(kept?.responseHeader == "permessage-deflate; server_no_context_takeover")
        #expect(kept?.clientNoContextTakeover == false)
        // Offered by the client: taken whatever the hub allows.
        let offered = ["permessage-deflate; client_no_context_takeover"]
        #expect(PerMessageDeflate.negotiate(offered, clientContextTakeover: true)?.clientNoContextTakeover == true)
        let full = PerMessageDeflate.negotiate([
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
        ])
        #expect(
            full?.responseHeader
                == "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
        )
        #expect(
            PerMessageDeflate.negotiate(["permessage-deflate; client_max_window_bits=\"9\""])?.clientMaxWindowBits == 9)
        // Declined offers fall through to the next one.
        #expect(
            PerMessageDeflate.negotiate([
                "permessage-deflate; unknown=1, permessage-deflate; client_no_context_takeover"
            ])?.clientNoContextTakeover == true)
        // zlib's window 8 quirk
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; server_max_window_bits=8"]) == nil)
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; server_max_window_bits=16"]) == nil)
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; server_max_window_bits"]) == nil)
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; client_max_window_bits=7"]) == nil)
        #expect(
            PerMessageDeflate.negotiate(["permessage-deflate; client_no_context_takeover; client_no_context_takeover"])
                == nil)
        #expect(PerMessageDeflate.negotiate(["permessage-deflate; server_no_context_takeover=1"]) == nil)
    }
}

@Suite struct HandshakeTests {
    func evaluate(
        _ headers: [String: [String]], get: Bool = true, minor: Int = 1, endpoint: WebSocketHandshake.Endpoint = .init()
    ) -> WebSocketHandshake.Outcome {
        WebSocketHandshake.evaluate(isGet: get, minorVersion: minor, values: { headers[$0] ?? [] }, endpoint: endpoint)
    }

    let good: [String: [String]] = [
        "upgrade": ["websocket"], "connection": ["keep-alive, Upgrade"],
        "sec-websocket-version": ["13"], "sec-websocket-key": ["dGhlIHNhbXBsZSBub25jZQ=="],
    ]

    @Test func rfcExampleAcceptKey() {
        #expect(WebSocketHandshake.acceptValue(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        guard case .accept(let h, let d, let p) = evaluate(good) else { Issue.record("refused"); return }
        #expect(h.contains { $0 == ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") })
        #expect(d == nil && p == nil)
    }

    func status(_ o: WebSocketHandshake.Outcome) -> Int? {
        if case .refuse(let s, _, _) = o { return s }
        return nil
    }

    @Test func refusals() {
        var h = good
        h["sec-websocket-version"] = ["8"]
        #expect(status(evaluate(h)) == 426)
        h = good; h["upgrade"] = nil
        #expect(status(evaluate(h)) == 426)
        h = good; h["connection"] = ["keep-alive"]
        #expect(status(evaluate(h)) == 400)
        h = good; h["sec-websocket-key"] = ["c2hvcnQ="]
        #expect(status(evaluate(h)) == 400)
        h = good; h["sec-websocket-key"] = nil
        #expect(status(evaluate(h)) == 400)
        #expect(status(evaluate(good, get: false)) == 400)
        #expect(status(evaluate(good, minor: 0)) == 400)
    }

    @Test func originPolicy() {
        var ep = WebSocketHandshake.Endpoint()
        ep.origins = OriginPolicy(["https://app.example.com", "*.trusted.org", "http://*.dev.test"])
        var h = good
        h["origin"] = ["https://evil.com"]
        #expect(status(evaluate(h, endpoint: ep)) == 403)
        for ok in [
            "https://app.example.com", "https://a.trusted.org", "http://b.c.trusted.org:8080", "http://x.dev.test",
        ] {
            h["origin"] = [ok]
            #expect(status(evaluate(h, endpoint: ep)) == nil, "\(ok)")
        }
        for bad in [
            "https://trusted.org", "https://x.dev.test", "https://app.example.com.evil.com", "https://eviltrusted.org",
        ] {
            h["origin"] = [bad]
            #expect(status(evaluate(h, endpoint: ep)) == 403, "\(bad)")
        }
    }

    @Test func subprotocolIsTheFirstOfferedThatIsSupported() {
        var ep = WebSocketHandshake.Endpoint()
        ep.subprotocols = ["b", "c"]
        var h = good
        h["sec-websocket-protocol"] = ["a, c", "b"]
        guard case .accept(let headers, _, let p) = evaluate(h, endpoint: ep) else { Issue.record("refused"); return }
        #expect(p == "c")
        #expect(headers.contains { $0 == ("Sec-WebSocket-Protocol", "c") })
        h["sec-websocket-protocol"] = ["x"]
        guard case .accept(let h2, _, nil) = evaluate(h, endpoint: ep) else {
            Issue.record("expected no subprotocol"); return
        }
        #expect(!h2.contains { $0.0 == "Sec-WebSocket-Protocol" })
    }
}
