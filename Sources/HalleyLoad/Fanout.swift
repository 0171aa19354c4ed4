#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux

/// `fanout`: subscribers (WebSocket, long-poll, pusher-js xhr_streaming) and publishers, the
/// bookkeeping of every delivery, and the run (open, sync, the phases).
extension Load {
    static let kCursor = Array("\"cursor\":".utf8)
    static let crlf: [UInt8] = [13, 10]
    static let crlfcrlf: [UInt8] = [13, 10, 13, 10]
    static let http11 = Array(" HTTP/1.1\r\n".utf8)
    static let nchanPoll = Array("GET /sub/bench HTTP/1.1\r\nIf-Modified-Since: ".utf8)
    static let ifNoneMatch = Array("\r\nIf-None-Match: ".utf8)
    static let publishPrefix = Array("{\"channel\":\"bench\",\"event\":\"tick\",\"data\":\"".utf8)
    static let publishSuffix = Array("\"}".utf8)

    // MARK: deliveries

    /// Message `seq`, published at `sentNs`, reached subscriber `c` at `now`.
    @inline(__always)
    func deliver(_ c: UnsafeMutablePointer<Conn>, _ seq: Int64, _ sentNs: Int64, _ now: Int64) {
        let s = st
        if seq < 0 || seq >= s.pointee.nextSeq { return s.pointee.foreign += 1 }  // left by an earlier run
        // Publishers on several connections race, so the server may order two messages unlike
        // their seq: `expect` is the lowest seq not received yet, bit k of `seen` whether
        // expect + 1 + k was; a message more than 64 ahead gives up on the oldest missing.
        if c.pointee.expect < 0 {
            s.pointee.gotFirst += 1
            c.pointee.expect = seq
            c.pointee.seen = 0
        }
        if seq < c.pointee.expect { return s.pointee.dups += 1 }
        while seq - c.pointee.expect > 64 {
            s.pointee.skipped += 1
            slide(c)
        }
        if seq == c.pointee.expect {
            slide(c)
        } else {
            let bit: UInt64 = 1 << UInt64(seq - c.pointee.expect - 1)
            if c.pointee.seen & bit != 0 { return s.pointee.dups += 1 }
            c.pointee.seen |= bit
            s.pointee.reordered += 1
        }
        if s.pointee.measuring { s.pointee.windowCount += 1 }
        if seq >= s.pointee.rangeFrom && seq < s.pointee.rangeTo {
            c.pointee.inRange += 1
            s.pointee.rangeReceived += 1
            lat.add(now - sentNs)
        }
        if seq >= s.pointee.oldest {
            ringCount[Int(seq & Self.ringMask)] += 1
            if seq == s.pointee.oldest { advance() }
        }
    }

    /// Moves past the lowest missing seq (received or given up) and the received ones after it.
    @inline(__always)
    func slide(_ c: UnsafeMutablePointer<Conn>) {
        let k = (~c.pointee.seen).trailingZeroBitCount + 1
        c.pointee.expect += Int64(k)
        c.pointee.seen >>= k
    }

    /// Moves `oldest` past the messages every subscriber has.
    @inline(__always)
    func advance() {
        let s = st
        while s.pointee.oldest < s.pointee.nextSeq
            && ringCount[Int(s.pointee.oldest & Self.ringMask)] >= s.pointee.target
        {
            s.pointee.oldest += 1
        }
    }

    /// Deliveries in a subscriber's bytes; false when there were none.
    @inline(__always)
    func delivered(_ c: UnsafeMutablePointer<Conn>, _ p: UnsafePointer<UInt8>, _ len: Int, _ now: Int64) -> Bool {
        scanMarkers(p, len) { deliver(c, $0, $1, now) } > 0
    }

    func hubError(_ p: UnsafePointer<UInt8>, _ len: Int) -> Bool {
        contains("pusher:error", in: p, len) || contains("subscription_error", in: p, len)
            || contains("halley:reason", in: p, len)
    }

    func text(_ p: UnsafePointer<UInt8>, _ len: Int) -> String {
        String(decoding: UnsafeBufferPointer(start: p, count: min(len, 300)), as: UTF8.self)
    }

    // MARK: WebSocket subscribers

    @inline(__always)
    func subscriberFrame(_ i: Int, _ fin: Bool, _ op: UInt8, _ p: UnsafeMutablePointer<UInt8>, _ len: Int, _ now: Int64)
    {
        let c = conns + i
        if op != 0 && c.pointee.msgOpcode != 0 { return fail(i, "new data frame inside a fragmented message") }
        if op == 0 && c.pointee.msgOpcode == 0 { return fail(i, "continuation frame outside a message") }
        if op != 0 && fin { return message(i, op, p, len, now) }
        if op != 0 {
            c.pointee.msgOpcode = op
            c.pointee.frag.clear()
        }
        c.pointee.frag.append(p, len)
        if fin {
            c.pointee.msgOpcode = 0
            message(i, 1, c.pointee.frag.base!, c.pointee.frag.count, now)
        }
    }

    @inline(__always)
    func message(_ i: Int, _ op: UInt8, _ p: UnsafeMutablePointer<UInt8>, _ len: Int, _ now: Int64) {
        let c = conns + i
        if op != 1 { return fail(i, "a binary message (\(len) B)") }
        if delivered(c, p, len, now) {
            if c.pointee.step != 2 { error(i, "a published message before the subscription was confirmed") }
        } else if o.server == .halley && c.pointee.step == 0
            && contains("\"pusher:connection_established\"", in: p, len)
        {
            c.pointee.step = 1
            sendFrame(i, 1, subscribeJSON)
        } else if o.server == .halley && c.pointee.step == 1
            && contains("\"pusher_internal:subscription_succeeded\"", in: p, len)
        {
            c.pointee.step = 2
            markReady(i)
        } else if o.server == .halley && hubError(p, len) {
            fail(i, "hub error: \(text(p, len))")
        } else {
            st.pointee.other += 1
        }
    }

    // MARK: HTTP: long-poll subscribers, publishers, xhr before its stream

    /// Whole responses from `p`; returns the bytes used.
    func responses(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ count: Int, _ now: Int64) -> Int {
        let c = conns + i
        let gen = c.pointee.gen
        var off = 0
        while off < count {
            switch parseResponse(p + off, count - off, scratch: &scratch.pointee) {
            case .incomplete: return off
            case .invalid(let why):
                fail(i, why)
                return count
            case .response(let head, let body, let len, let consumed):
                let start = p + off
                off += consumed
                if head.status < 200 { continue }
                guard c.pointee.awaiting else {
                    fail(i, "a response (\(head.status)) to no request")
                    return count
                }
                c.pointee.awaiting = false
                if head.close { c.pointee.reopen = true }
                switch c.pointee.kind {
                case .publisher: published(i, head.status, body, len, now)
                case .xhr: xhrResponse(i, head.status, body, len)
                default:
                    if o.server == .halley {
                        halleyPoll(i, head.status, body, len, now)
                    } else {
                        nchanPoll(i, start, head, body, len, now)
                    }
                }
                if c.pointee.gen != gen { return count }
                if c.pointee.reopen {
                    st.pointee.reconnects += 1
                    reopen(i)
                    return count
                }
            }
        }
        return off
    }

    /// The request in `req`: now, or once connected again.
    @inline(__always)
    func sendRequest(_ i: Int) {
        let c = conns + i
        c.pointee.awaiting = true
        if !c.pointee.reopen && c.pointee.state == .open { send(i, c.pointee.req.base!, c.pointee.req.count) }
    }

    func setRequest(_ i: Int, _ parts: [UInt8]...) {
        conns[i].req.clear()
        for p in parts { conns[i].req.append(p) }
    }

    /// The first request of a long-poll or xhr subscriber, sent once it is connected.
    func prepareFirstRequest(_ i: Int) {
        let c = conns + i
        if c.pointee.kind == .xhr { return xhrPrepare(i) }
        guard c.pointee.kind == .longpoll else { return }
        c.pointee.step = o.server == .halley ? 0 : 2
        let path = o.server == .halley ? "/halley/poll?key=\(o.appKey)" : "/sub/\(o.channel)"
        setRequest(i, Array("GET \(path) HTTP/1.1\r\n".utf8), hostHeaders[server(i)], Self.crlf)
    }

    func halleyPoll(_ i: Int, _ status: Int, _ body: UnsafePointer<UInt8>, _ len: Int, _ now: Int64) {
        let c = conns + i
        guard status == 200 else { return fail(i, "poll step \(c.pointee.step): status \(status): \(text(body, len))") }
        if c.pointee.step == 0 {
            guard let session = jsonString("session", in: body, len), let token = jsonString("token", in: body, len),
                let cursor = jsonInt(Self.kCursor, in: body, len)
            else { return fail(i, "no session, token or cursor in the first poll answer: \(text(body, len))") }
            c.pointee.cursor = cursor
            c.pointee.prefix.clear()
            c.pointee.prefix.append("GET /halley/poll?session=\(session)&cursor=")
            c.pointee.auth.clear()
            c.pointee.auth.append("X-Halley-Token: \(token)\r\n")
            let head = "POST /halley/send?session=\(session) HTTP/1.1\r\nContent-Type: application/json\r\n"
            setRequest(i, Array(head.utf8), hostHeaders[server(i)], c.pointee.auth.bytes)
            c.pointee.req.append("Content-Length: \(subscribeJSON.count)\r\n\r\n")
            c.pointee.req.append(subscribeJSON)
            c.pointee.step = 1
            return sendRequest(i)
        }
        if c.pointee.step == 2 {
            guard let cursor = jsonInt(Self.kCursor, in: body, len) else {
                return fail(i, "no cursor: \(text(body, len))")
            }
            let confirmed = !c.pointee.ready && contains("\"pusher_internal:subscription_succeeded\"", in: body, len)
            if confirmed { markReady(i) }
            if delivered(c, body, len, now) {
                if !c.pointee.ready { error(i, "a published message before the subscription was confirmed") }
            } else if !confirmed && hubError(body, len) {
                return fail(i, "hub error in a poll answer: \(text(body, len))")
            }
            c.pointee.cursor = cursor
        }
        c.pointee.step = 2
        c.pointee.req.clear()
        c.pointee.req.append(c.pointee.prefix)
        c.pointee.req.appendDecimal(c.pointee.cursor)
        c.pointee.req.append(Self.http11)
        c.pointee.req.append(hostHeaders[server(i)])
        c.pointee.req.append(c.pointee.auth)
        c.pointee.req.append(Self.crlf)
        sendRequest(i)
    }

    func nchanPoll(
        _ i: Int, _ start: UnsafePointer<UInt8>, _ head: ResponseHead, _ body: UnsafePointer<UInt8>, _ len: Int,
        _ now: Int64
    ) {
        let c = conns + i
        switch head.status {
        case 200:
            _ = delivered(c, body, len, now)
            guard let lm = head.lastModified, let et = head.etag else {
                return fail(i, "a long-poll answer without Last-Modified and Etag")
            }
            c.pointee.req.clear()
            c.pointee.req.append(Self.nchanPoll)
            c.pointee.req.append(start + lm.lowerBound, lm.count)
            c.pointee.req.append(Self.ifNoneMatch)
            c.pointee.req.append(start + et.lowerBound, et.count)
            c.pointee.req.append(Self.crlf)
            c.pointee.req.append(hostHeaders[server(i)])
            c.pointee.req.append(Self.crlf)
            sendRequest(i)
        case 304, 408: sendRequest(i)  // the wait timed out: ask again
        default: fail(i, "long-poll status \(head.status): \(text(body, len))")
        }
    }

    // MARK: pusher-js xhr_streaming (halley)

    // One keep-alive connection per subscriber, under /pusher/app/KEY/SERVER/SESSION/: step 0
    // POST xhr (the session's `o`), 1 POST xhr_send ["{pusher:subscribe}"] (204), 2 POST
    // xhr_streaming waiting for the head, 3 the stream: chunks of whole lines (`a[...]`, `h`),
    // ready at subscription_succeeded. (pusher-js opens with the stream and sends on other
    // connections; opening with a poll keeps one connection per subscriber.) Past 256 KiB of
    // stream, at a line boundary, the subscriber closes it and opens the next, as pusher-js does.

    func xhrPrepare(_ i: Int) {
        let c = conns + i
        let alphabet = Array("0123456789abcdefghijklmnopqrstuv".utf8)
        let session = String(decoding: (0..<8).map { _ in alphabet[Int(rng.next() % 32)] }, as: UTF8.self)
        let base = "/pusher/app/\(o.appKey)/\(i % 1000)/\(session)"
        let query = "?protocol=7&client=js&version=8.4.0&t=1&n=\(i)"
        let (host, port) = servers[server(i)]
        let head = " HTTP/1.1\r\nHost: \(host):\(port)\r\nContent-Type: application/json\r\nContent-Length: "
        c.pointee.step = 0
        setRequest(i, Array("POST \(base)/xhr\(query)\(head)0\r\n\r\n".utf8))
        c.pointee.prefix.clear()
        c.pointee.prefix.append("POST \(base)/xhr_streaming\(query)\(head)0\r\n\r\n")
        var body = Array("[\"".utf8)
        for b in subscribeJSON {
            if b == 34 || b == 92 { body.append(92) }
            body.append(b)
        }
        body += Array("\"]".utf8)
        xhrSendRequests[i] = Array("POST \(base)/xhr_send?t=1&n=\(i)\(head)\(body.count)\r\n\r\n".utf8) + body
    }

    func xhrResponse(_ i: Int, _ status: Int, _ body: UnsafePointer<UInt8>, _ len: Int) {
        let c = conns + i
        if c.pointee.step == 0 {
            guard status == 200, len == 2, body[0] == UInt8(ascii: "o") else {
                return fail(i, "xhr: status \(status): \(text(body, len))")
            }
            c.pointee.step = 1
            setRequest(i, xhrSendRequests.removeValue(forKey: i) ?? [])
            return sendRequest(i)
        }
        guard status == 204 else { return fail(i, "xhr_send: status \(status): \(text(body, len))") }
        c.pointee.step = 2
        c.pointee.streamBytes = 0
        setRequest(i, c.pointee.prefix.bytes)
        sendRequest(i)
    }

    @inline(__always)
    func xhrProcess(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ count: Int, _ now: Int64) -> Int {
        let c = conns + i
        if c.pointee.step < 2 { return responses(i, p, count, now) }
        guard c.pointee.step == 2 else { return xhrChunks(i, p, count, now) }
        let he = findHeadEnd(p, count)
        if he < 0 {
            if count > 16384 { fail(i, "no end of the xhr_streaming response head in 16 KiB") }
            return 0
        }
        guard he >= 12, p[9] == 50, p[10] == 48, p[11] == 48 else {  // "HTTP/1.1 200", chunked
            fail(i, "xhr_streaming: '\(text(p, min(he, 60)))'")
            return count
        }
        c.pointee.awaiting = false
        c.pointee.step = 3
        let gen = c.pointee.gen
        let used = xhrChunks(i, p + he + 4, count - he - 4, now)
        return c.pointee.gen != gen ? count : he + 4 + used
    }

    /// Whole chunks (`size CRLF data CRLF`), each one or more whole lines; returns the bytes used.
    @inline(__always)
    func xhrChunks(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ count: Int, _ now: Int64) -> Int {
        let c = conns + i
        let gen = c.pointee.gen
        var off = 0
        while off < count {
            guard let (size, k) = hexNumber(p, off, count, max: 8) else {
                fail(i, "chunk size too long")
                return count
            }
            if k + 1 >= count { return off }
            guard k > off, p[k] == 13, p[k + 1] == 10 else {
                fail(i, "bad chunk size line")
                return count
            }
            if size == 0 {
                fail(i, "the server ended the stream")
                return count
            }
            let data = k + 2
            if count - data < size + 2 { return off }
            xhrData(i, p + data, size, now)
            if c.pointee.gen != gen { return count }
            off = data + size + 2
            if c.pointee.streamBytes > 256 * 1024 && off == count && p[data + size - 1] == 10 {
                st.pointee.rotations += 1
                setRequest(i, c.pointee.prefix.bytes)
                c.pointee.step = 2
                c.pointee.streamBytes = 0
                c.pointee.awaiting = true
                reopen(i)
                return count
            }
        }
        return off
    }

    @inline(__always)
    func xhrData(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ len: Int, _ now: Int64) {
        let c = conns + i
        c.pointee.streamBytes += len
        if delivered(c, p, len, now) {
            if !c.pointee.ready { error(i, "a published message before the subscription was confirmed") }
        } else if p[0] == UInt8(ascii: "h") || p[0] == UInt8(ascii: "o") {
            return
        } else if p[0] == UInt8(ascii: "c") || hubError(p, len) {
            fail(i, "hub error on the stream: \(text(p, len))")
        } else if !c.pointee.ready && contains("pusher_internal:subscription_succeeded", in: p, len) {
            markReady(i)
        } else {
            st.pointee.other += 1
        }
    }

    // MARK: publishing

    /// Publishes message `nextSeq` on a free publisher connection (the caller checked one is).
    @inline(__always)
    func publish() {
        let s = st
        s.pointee.freeCount -= 1
        let i = freePubs[s.pointee.freeCount]
        let seq = s.pointee.nextSeq
        s.pointee.nextSeq = seq + 1
        let now = monotonicNanos()
        ringCount[Int(seq & Self.ringMask)] = 0
        ringSent[Int(seq & Self.ringMask)] = now
        let body = scratch + 1
        body.pointee.clear()
        if o.server == .halley { body.pointee.append(Self.publishPrefix) }
        buildData(into: &body.pointee, seq: seq, ns: now, size: o.size)
        if o.server == .halley { body.pointee.append(Self.publishSuffix) }
        let b = scratch
        b.pointee.clear()
        b.pointee.append(publishHead)
        b.pointee.appendDecimal(Int64(body.pointee.count))
        b.pointee.append(Self.crlfcrlf)
        b.pointee.append(body.pointee)
        conns[i].awaiting = true
        conns[i].sentAt = now
        s.pointee.published += 1
        send(i, b.pointee.base!, b.pointee.count)
    }

    func published(_ i: Int, _ status: Int, _ body: UnsafePointer<UInt8>, _ len: Int, _ now: Int64) {
        guard status == 201 || status == 202 else { return fail(i, "publish: status \(status): \(text(body, len))") }
        if !conns[i].reopen {
            freePubs[st.pointee.freeCount] = i
            st.pointee.freeCount += 1
        }
    }

    /// Publishes what is due (rate, sync) or allowed (window); gives up on messages that have
    /// not reached every subscriber in 15 s.
    @inline(__always)
    func publishTick(_ now: Int64) {
        let s = st
        if s.pointee.mode == .window {
            while s.pointee.freeCount > 0 && s.pointee.nextSeq - s.pointee.oldest < Int64(o.window) { publish() }
        } else if s.pointee.mode != .off {
            while s.pointee.nextDue <= now && s.pointee.freeCount > 0 {
                let behind = monotonicNanos() - s.pointee.nextDue
                s.pointee.pubBehindMax = max(s.pointee.pubBehindMax, behind)
                if behind > s.pointee.interval { s.pointee.pubLate += 1 }
                publish()
                s.pointee.nextDue += s.pointee.interval
                if s.pointee.nextSeq - s.pointee.oldest >= Int64(Self.ringSize - 2) { giveUp() }
            }
            if s.pointee.nextDue > now && s.pointee.timerArmedFor != s.pointee.nextDue {
                var spec = itimerspec()
                spec.it_value = timespec(
                    tv_sec: Int(s.pointee.nextDue / 1_000_000_000), tv_nsec: Int(s.pointee.nextDue % 1_000_000_000))
                if timerfd_settime(timerfd, Int32(TFD_TIMER_ABSTIME), &spec, nil) == 0 {
                    s.pointee.timerArmedFor = s.pointee.nextDue
                }
            }
        }
        while s.pointee.oldest < s.pointee.nextSeq
            && now - ringSent[Int(s.pointee.oldest & Self.ringMask)] > 15_000_000_000
        {
            giveUp()
        }
    }

    func giveUp() {
        st.pointee.stalls += 1
        st.pointee.oldest += 1
        advance()
    }
}
