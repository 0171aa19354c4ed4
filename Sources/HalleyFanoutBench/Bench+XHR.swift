#if canImport(Glibc)
import Glibc
#endif

/// pusher-js's xhr_streaming transport against halley
/// (`/pusher/app/KEY/{server}/{session}/...`). One keep-alive connection per subscriber:
///   step 0  POST .../xhr            the session opens: `o\n`
///   step 1  POST .../xhr_send       ["{\"event\":\"pusher:subscribe\",...}"]: 204
///   step 2  POST .../xhr_streaming  waiting for the response head
///   step 3  the stream: chunks of whole lines (prelude, `a[...]`, `h`); ready at
///           subscription_succeeded
/// (pusher-js opens with the stream itself and sends on other connections; opening with a
/// poll keeps one connection per subscriber, and the fan-out measured is the stream's.)
/// Past 256 KiB of stream, at a line boundary, the subscriber closes the connection and opens
/// the next stream for the same session, as pusher-js does.
extension Bench {
    static let xhrRotationBytes = 256 * 1024

    func xhrPrepare(_ i: Int) {
        let c = conns + i
        var session = ""
        for _ in 0..<8 {
            session.append(
                Character(Unicode.Scalar(UInt8(Array("0123456789abcdefghijklmnopqrstuv".utf8)[Int(rng.next() % 32)]))))
        }
        let base = "/pusher/app/\(o.appKey)/\(i % 1000)/\(session)"
        let query = "?protocol=7&client=js&version=8.4.0&t=1&n=\(i)"
        let head = " HTTP/1.1\r\nHost: \(o.host):\(o.port)\r\nContent-Type: application/json\r\nContent-Length: "
        c.pointee.step = 0
        c.pointee.req.clear()
        c.pointee.req.append("POST \(base)/xhr\(query)\(head)0\r\n\r\n")
        // The stream request, kept for every rotation.
        c.pointee.prefix.clear()
        c.pointee.prefix.append("POST \(base)/xhr_streaming\(query)\(head)0\r\n\r\n")
        // The subscribe request, made once the session is open (in `req` then).
        var send: [UInt8] = Array("[\"".utf8)
        for b in subscribeJSON {
            if b == UInt8(ascii: "\"") || b == UInt8(ascii: "\\") { send.append(UInt8(ascii: "\\")) }
            send.append(b)
        }
        send += Array("\"]".utf8)
        xhrSendRequests[i] = Array("POST \(base)/xhr_send?t=1&n=\(i)\(head)\(send.count)\r\n\r\n".utf8) + send
    }

    /// Answers to the opening poll and the subscribe.
    func xhrResponse(_ i: Int, _ head: ResponseHead, _ body: UnsafePointer<UInt8>, _ len: Int) {
        let c = conns + i
        switch c.pointee.step {
        case 0:
            guard head.status == 200, len == 2, body[0] == UInt8(ascii: "o") else {
                fail(i, "xhr: status \(head.status): \(bodyText(body, len))")
                return
            }
            c.pointee.step = 1
            c.pointee.req.clear()
            c.pointee.req.append(xhrSendRequests.removeValue(forKey: i) ?? [])
            sendRequest(i)
        default:
            guard head.status == 204 else {
                fail(i, "xhr_send: status \(head.status): \(bodyText(body, len))")
                return
            }
            xhrOpenStream(i)
        }
    }

    func xhrOpenStream(_ i: Int) {
        let c = conns + i
        c.pointee.step = 2
        c.pointee.streamBytes = 0
        c.pointee.req.clear()
        c.pointee.req.append(c.pointee.prefix.base!, c.pointee.prefix.count)
        sendRequest(i)
    }

    /// Bytes of an xhr subscriber; returns the bytes used.
    @inline(__always)
    func xhrProcess(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ count: Int, _ now: Int64) -> Int {
        let c = conns + i
        if c.pointee.step < 2 { return responses(i, p, count, now) }
        if c.pointee.step == 2 {
            let he = findHeadEnd(p, count)
            if he < 0 {
                if count > 16384 { fail(i, "no end of the xhr_streaming response head in 16 KiB") }
                return 0
            }
            // "HTTP/1.1 200", chunked (the hub streams chunked on HTTP/1.1).
            guard he >= 12, p[9] == 50, p[10] == 48, p[11] == 48 else {
                fail(
                    i,
                    "xhr_streaming: '\(String(decoding: UnsafeBufferPointer(start: p, count: min(he, 60)), as: UTF8.self))'"
                )
                return count
            }
            c.pointee.awaiting = false
            c.pointee.step = 3
            let gen = c.pointee.gen
            let used = xhrChunks(i, p + he + 4, count - he - 4, now)
            return c.pointee.gen != gen ? count : he + 4 + used
        }
        return xhrChunks(i, p, count, now)
    }

    /// Whole chunks (`size CRLF data CRLF`): each is one or more whole lines as the hub
    /// writes them. Returns the bytes used.
    @inline(__always)
    func xhrChunks(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ count: Int, _ now: Int64) -> Int {
        let c = conns + i
        let gen = c.pointee.gen
        var off = 0
        while off < count {
            var k = off
            var size = 0
            while k < count {
                let d = p[k]
                let v: Int
                if d >= 48 && d <= 57 {
                    v = Int(d - 48)
                } else if d >= 97 && d <= 102 {
                    v = Int(d - 87)
                } else if d >= 65 && d <= 70 {
                    v = Int(d - 55)
                } else {
                    break
                }
                size = size << 4 | v
                k += 1
                if k - off > 8 { fail(i, "chunk size too long"); return count }
            }
            if k + 1 >= count { return off }
            guard k > off, p[k] == 13, p[k + 1] == 10 else { fail(i, "bad chunk size line"); return count }
            if size == 0 { fail(i, "the server ended the stream"); return count }
            let data = k + 2
            if count - data < size + 2 { return off }
            xhrData(i, p + data, size, now)
            if c.pointee.gen != gen { return count }
            off = data + size + 2
            // pusher-js: past 256 KiB with every line consumed, abort and open the next stream.
            if c.pointee.streamBytes > Self.xhrRotationBytes && off == count && p[data + size - 1] == 10 {
                st.pointee.rotations += 1
                c.pointee.req.clear()
                c.pointee.req.append(c.pointee.prefix.base!, c.pointee.prefix.count)
                c.pointee.step = 2
                c.pointee.streamBytes = 0
                c.pointee.awaiting = true
                reopen(i)
                return count
            }
        }
        return off
    }

    /// One chunk of the stream.
    @inline(__always)
    func xhrData(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ len: Int, _ now: Int64) {
        let c = conns + i
        c.pointee.streamBytes += len
        let k = scanMarkers(p, len) { seq, ns in deliver(c, seq, ns, now) }
        if k > 0 {
            if !c.pointee.ready { error(i, "a published message before the subscription was confirmed") }
            return
        }
        if p[0] == UInt8(ascii: "h") || p[0] == UInt8(ascii: "o") { return }
        if p[0] == UInt8(ascii: "c") || contains("pusher:error", in: p, len)
            || contains("subscription_error", in: p, len)
        {
            fail(i, "hub error on the stream: \(bodyText(p, len))")
            return
        }
        if !c.pointee.ready && contains("pusher_internal:subscription_succeeded", in: p, len) {
            markReady(i)
            return
        }
        st.pointee.other += 1
    }
}
