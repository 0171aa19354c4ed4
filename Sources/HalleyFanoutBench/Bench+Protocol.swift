#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux

/// What subscribers and publishers say and hear: WebSocket frames, long-poll answers, publish
/// requests, and the bookkeeping of every delivery.
extension Bench {
    // MARK: deliveries

    /// Message `seq`, published at `sentNs`, reached subscriber `c` at `now`.
    @inline(__always)
    func deliver(_ c: UnsafeMutablePointer<Conn>, _ seq: Int64, _ sentNs: Int64, _ now: Int64) {
        let s = st
        if seq < 0 || seq >= s.pointee.nextSeq {
            // Not published by this run (a message left in the channel by an earlier one).
            s.pointee.foreign += 1
            return
        }
        // Publishers on several connections race: the server may order two messages unlike
        // their seq. `expect` is the lowest seq not received yet, `seen` bit k says whether
        // expect + 1 + k was; a message more than 64 ahead gives up on the oldest missing ones.
        var base = c.pointee.expect
        if base < 0 {
            s.pointee.gotFirst += 1
            base = seq
            c.pointee.expect = seq
            c.pointee.seen = 0
        }
        if seq < base {
            s.pointee.dups += 1
            return
        }
        while seq - base > 64 {
            s.pointee.skipped += 1
            slide(c)
            base = c.pointee.expect
        }
        if seq == base {
            slide(c)
        } else {
            let bit: UInt64 = 1 << UInt64(seq - base - 1)
            if c.pointee.seen & bit != 0 {
                s.pointee.dups += 1
                return
            }
            c.pointee.seen |= bit
            s.pointee.reordered += 1
        }
        s.pointee.deliveries += 1
        if s.pointee.measuring { s.pointee.windowDeliveries += 1 }
        if seq >= s.pointee.rangeFrom && seq < s.pointee.rangeTo {
            c.pointee.inRange += 1
            s.pointee.rangeReceived += 1
            let ns = now - sentNs
            lat.add(ns)
            s.pointee.latCount += 1
            s.pointee.latSum += ns
            if ns > s.pointee.latMax { s.pointee.latMax = ns }
        }
        if seq >= s.pointee.oldest {
            ringCount[Int(seq & Self.ringMask)] += 1
            if seq == s.pointee.oldest { advance() }
        }
    }

    /// The subscriber's lowest missing seq is done with (received or given up): moves past it and
    /// past the ones after it that were received.
    @inline(__always)
    func slide(_ c: UnsafeMutablePointer<Conn>) {
        var m = c.pointee.seen
        var b = c.pointee.expect + 1
        while m & 1 != 0 {
            m >>= 1
            b += 1
        }
        c.pointee.expect = b
        c.pointee.seen = m >> 1
    }

    /// Moves `oldest` past the messages every subscriber has.
    @inline(__always)
    func advance() {
        let s = st
        let target = Int32(s.pointee.target)
        while s.pointee.oldest < s.pointee.nextSeq && ringCount[Int(s.pointee.oldest & Self.ringMask)] >= target {
            s.pointee.oldest += 1
        }
    }

    // MARK: WebSocket

    /// Whole frames from `p`; returns the bytes used.
    @inline(__always)
    func frames(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ count: Int, _ now: Int64) -> Int {
        let c = conns + i
        let gen = c.pointee.gen
        var off = 0
        while off < count {
            switch parseFrameHeader(p + off, count - off) {
            case .incomplete:
                return off
            case .invalid(let why):
                fail(i, why)
                return count
            case .frame(let fin, let op, let h, let len):
                if count - off < h + len { return off }
                let payload = p + off + h
                off += h + len
                frame(i, fin, op, payload, len, now)
                if c.pointee.gen != gen { return count }
            }
        }
        return off
    }

    @inline(__always)
    func frame(_ i: Int, _ fin: Bool, _ op: UInt8, _ p: UnsafeMutablePointer<UInt8>, _ len: Int, _ now: Int64) {
        let c = conns + i
        switch op {
        case 1, 2:
            if c.pointee.fragOpcode != 0 { fail(i, "new data frame inside a fragmented message"); return }
            if fin {
                message(i, op, p, len, now)
            } else {
                c.pointee.fragOpcode = op
                c.pointee.frag.clear()
                c.pointee.frag.append(p, len)
            }
        case 0:
            if c.pointee.fragOpcode == 0 { fail(i, "continuation frame outside a message"); return }
            c.pointee.frag.append(p, len)
            if fin {
                let op0 = c.pointee.fragOpcode
                c.pointee.fragOpcode = 0
                message(i, op0, c.pointee.frag.base!, c.pointee.frag.count, now)
            }
        case 9:
            st.pointee.pings += 1
            if c.pointee.state == .open {
                send(
                    i,
                    maskedFrame(opcode: 10, payload: Array(UnsafeBufferPointer(start: p, count: len)), key: rng.next()))
            }
        case 10:
            break
        default:  // 8: close
            if c.pointee.state == .closing {
                c.pointee.gotClose = true
                return
            }
            let code = len >= 2 ? Int(p[0]) << 8 | Int(p[1]) : -1
            let reason =
                len > 2 ? String(decoding: UnsafeBufferPointer(start: p + 2, count: len - 2), as: UTF8.self) : ""
            send(i, maskedFrame(opcode: 8, payload: len >= 2 ? [p[0], p[1]] : [], key: rng.next()))
            fail(i, "the server closed the WebSocket: code \(code) '\(reason)' (step \(c.pointee.step))")
        }
    }

    @inline(__always)
    func message(_ i: Int, _ op: UInt8, _ p: UnsafeMutablePointer<UInt8>, _ len: Int, _ now: Int64) {
        let c = conns + i
        if op != 1 { fail(i, "a binary message (\(len) B)"); return }
        let k = scanMarkers(p, len) { seq, ns in deliver(c, seq, ns, now) }
        if k > 0 {
            if c.pointee.step != 2 { error(i, "a published message before the subscription was confirmed") }
            return
        }
        if o.server == .halley {
            if c.pointee.step == 0 && contains("\"pusher:connection_established\"", in: p, len) {
                c.pointee.step = 1
                send(i, maskedFrame(opcode: 1, payload: subscribeJSON, key: rng.next()))
                return
            }
            if c.pointee.step == 1 && contains("\"pusher_internal:subscription_succeeded\"", in: p, len) {
                c.pointee.step = 2
                markReady(i)
                return
            }
            if contains("pusher:error", in: p, len) || contains("subscription_error", in: p, len) {
                fail(
                    i,
                    "hub error: \(String(decoding: UnsafeBufferPointer(start: p, count: min(len, 300)), as: UTF8.self))"
                )
                return
            }
        }
        st.pointee.other += 1
    }

    // MARK: HTTP (long-poll subscribers, publishers)

    /// Whole responses from `p`; returns the bytes used.
    func responses(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ count: Int, _ now: Int64) -> Int {
        let c = conns + i
        let gen = c.pointee.gen
        var off = 0
        while off < count {
            switch parseResponse(p + off, count - off, scratch: &scratch.pointee) {
            case .incomplete:
                return off
            case .invalid(let why):
                fail(i, why)
                return count
            case .response(let head, let body, let bodyLength, let consumed):
                let start = p + off
                off += consumed
                if head.status >= 100 && head.status < 200 { continue }
                if !c.pointee.awaiting {
                    fail(i, "a response (\(head.status)) to no request")
                    return count
                }
                c.pointee.awaiting = false
                if head.close { c.pointee.reopen = true }
                if c.pointee.kind == .publisher {
                    published(i, head, body, bodyLength, now)
                } else if c.pointee.kind == .xhr {
                    xhrResponse(i, head, body, bodyLength)
                } else if o.server == .halley {
                    halleyPoll(i, head, body, bodyLength, now)
                } else {
                    nchanPoll(i, start, head, body, bodyLength, now)
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

    func bodyText(_ body: UnsafePointer<UInt8>, _ len: Int) -> String {
        String(decoding: UnsafeBufferPointer(start: body, count: min(len, 300)), as: UTF8.self)
    }

    /// The request in `req`: sent now, or after the reconnect when the server is closing.
    @inline(__always)
    func sendRequest(_ i: Int) {
        let c = conns + i
        c.pointee.awaiting = true
        if c.pointee.reopen || c.pointee.state != .open { return }  // sent once connected
        send(i, c.pointee.req.base!, c.pointee.req.count)
    }

    /// The first request of a long-poll subscriber, sent once it is connected.
    func prepareFirstRequest(_ i: Int) {
        let c = conns + i
        if c.pointee.kind == .xhr { return xhrPrepare(i) }
        guard c.pointee.kind == .longpoll else { return }
        c.pointee.req.clear()
        if o.server == .halley {
            c.pointee.step = 0
            c.pointee.req.append("GET /halley/poll?key=\(o.appKey) HTTP/1.1\r\n")
        } else {
            c.pointee.step = 2
            c.pointee.req.append("GET /sub/\(o.channel) HTTP/1.1\r\n")
        }
        c.pointee.req.append(hostHeader)
        c.pointee.req.append([13, 10])
    }

    func halleyPoll(_ i: Int, _ head: ResponseHead, _ body: UnsafePointer<UInt8>, _ len: Int, _ now: Int64) {
        let c = conns + i
        guard head.status == 200 else {
            fail(i, "poll step \(c.pointee.step): status \(head.status): \(bodyText(body, len))")
            return
        }
        switch c.pointee.step {
        case 0:
            guard let session = jsonString("session", in: body, len), let token = jsonString("token", in: body, len),
                let cursor = jsonInt(Self.kCursor, in: body, len)
            else {
                fail(i, "no session, token or cursor in the first poll answer: \(bodyText(body, len))")
                return
            }
            c.pointee.cursor = cursor
            c.pointee.prefix.clear()
            c.pointee.prefix.append("GET /halley/poll?session=\(session)&cursor=")
            c.pointee.auth.clear()
            c.pointee.auth.append("X-Halley-Token: \(token)\r\n")
            c.pointee.req.clear()
            c.pointee.req.append("POST /halley/send?session=\(session) HTTP/1.1\r\n")
            c.pointee.req.append(hostHeader)
            c.pointee.req.append(c.pointee.auth.base!, c.pointee.auth.count)
            c.pointee.req.append("Content-Type: application/json\r\nContent-Length: \(subscribeJSON.count)\r\n\r\n")
            c.pointee.req.append(subscribeJSON)
            c.pointee.step = 1
            sendRequest(i)
        case 1:
            c.pointee.step = 2
            nextHalleyPoll(i)
        default:
            guard let cursor = jsonInt(Self.kCursor, in: body, len) else {
                fail(i, "no cursor in a poll answer: \(bodyText(body, len))")
                return
            }
            let k = scanMarkers(body, len) { seq, ns in deliver(c, seq, ns, now) }
            if k == 0 {
                if !c.pointee.ready && contains("\"pusher_internal:subscription_succeeded\"", in: body, len) {
                    markReady(i)
                } else if contains("pusher:error", in: body, len) || contains("subscription_error", in: body, len)
                    || contains("halley:reason", in: body, len)
                {
                    fail(i, "hub error in a poll answer: \(bodyText(body, len))")
                    return
                }
            } else if !c.pointee.ready {
                // The confirmation and the first messages in one batch.
                if contains("\"pusher_internal:subscription_succeeded\"", in: body, len) {
                    markReady(i)
                } else {
                    error(i, "a published message before the subscription was confirmed")
                }
            }
            c.pointee.cursor = cursor
            nextHalleyPoll(i)
        }
    }

    @inline(__always)
    func nextHalleyPoll(_ i: Int) {
        let c = conns + i
        c.pointee.req.clear()
        c.pointee.req.append(c.pointee.prefix.base!, c.pointee.prefix.count)
        c.pointee.req.appendDecimal(c.pointee.cursor)
        c.pointee.req.append(Self.httpVersionLine)
        c.pointee.req.append(hostHeader)
        c.pointee.req.append(c.pointee.auth.base!, c.pointee.auth.count)
        c.pointee.req.append(Self.crlf)
        sendRequest(i)
    }

    static let httpVersionLine = Array(" HTTP/1.1\r\n".utf8)
    static let crlf: [UInt8] = [13, 10]
    static let ifModifiedSince = Array("If-Modified-Since: ".utf8)
    static let ifNoneMatch = Array("If-None-Match: ".utf8)

    func nchanPoll(
        _ i: Int, _ start: UnsafePointer<UInt8>, _ head: ResponseHead, _ body: UnsafePointer<UInt8>,
        _ len: Int, _ now: Int64
    ) {
        let c = conns + i
        switch head.status {
        case 200:
            _ = scanMarkers(body, len) { seq, ns in deliver(c, seq, ns, now) }
            guard let lm = head.lastModified, let et = head.etag else {
                fail(i, "a long-poll answer without Last-Modified and Etag")
                return
            }
            c.pointee.req.clear()
            c.pointee.req.append("GET /sub/\(o.channel) HTTP/1.1\r\n")
            c.pointee.req.append(hostHeader)
            c.pointee.req.append(Self.ifModifiedSince)
            c.pointee.req.append(start + lm.lowerBound, lm.count)
            c.pointee.req.append(Self.crlf)
            c.pointee.req.append(Self.ifNoneMatch)
            c.pointee.req.append(start + et.lowerBound, et.count)
            c.pointee.req.append(Self.crlf)
            c.pointee.req.append(Self.crlf)
            sendRequest(i)
        case 304, 408:
            // The wait timed out: ask again for the same message.
            sendRequest(i)
        default:
            fail(i, "long-poll status \(head.status): \(bodyText(body, len))")
        }
    }

    // MARK: publishing

    /// Publishes message `nextSeq` on a free publisher connection (the caller checked one is).
    @inline(__always)
    func publish() {
        let s = st
        s.pointee.freeCount -= 1
        let i = freePubs[s.pointee.freeCount]
        let c = conns + i
        let seq = s.pointee.nextSeq
        s.pointee.nextSeq = seq + 1
        let now = monotonicNanos()
        let slot = Int(seq & Self.ringMask)
        ringCount[slot] = 0
        ringSent[slot] = now
        let body = bodyBuf
        body.pointee.clear()
        if o.server == .halley {
            body.pointee.append(Self.publishPrefix)
            body.pointee.append(channelBytes)
            body.pointee.append(Self.publishMiddle)
            buildData(into: &body.pointee, seq: seq, ns: now, size: o.size)
            body.pointee.append(Self.publishSuffix)
        } else {
            buildData(into: &body.pointee, seq: seq, ns: now, size: o.size)
        }
        let b = pubBuf
        b.pointee.clear()
        b.pointee.append(publishHead)
        b.pointee.appendDecimal(Int64(body.pointee.count))
        b.pointee.append(Self.crlfcrlf)
        b.pointee.append(body.pointee.base!, body.pointee.count)
        c.pointee.awaiting = true
        c.pointee.sentAt = now
        s.pointee.published += 1
        send(i, b.pointee.base!, b.pointee.count)
    }

    static let publishPrefix = Array("{\"channel\":\"".utf8)
    static let publishMiddle = Array("\",\"event\":\"tick\",\"data\":\"".utf8)
    static let publishSuffix = Array("\"}".utf8)

    static let crlfcrlf: [UInt8] = [13, 10, 13, 10]

    func published(_ i: Int, _ head: ResponseHead, _ body: UnsafePointer<UInt8>, _ len: Int, _ now: Int64) {
        let c = conns + i
        let s = st
        guard head.status == 201 || head.status == 202 else {
            fail(i, "publish: status \(head.status): \(bodyText(body, len))")
            return
        }
        s.pointee.pubAnswers += 1
        if head.status == 202 { s.pointee.pub202 += 1 }
        let ns = now - c.pointee.sentAt
        pubLat.add(ns)
        s.pointee.pubCount += 1
        s.pointee.pubSum += ns
        if ns > s.pointee.pubMax { s.pointee.pubMax = ns }
        if !c.pointee.reopen {
            freePubs[s.pointee.freeCount] = i
            s.pointee.freeCount += 1
        }
    }
}
