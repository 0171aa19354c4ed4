#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux

/// Reading the server's frames: headers split across reads, payload checks, control frames.
extension Bench {
    // MARK: frames from the server

    /// Reads frames in place from `count` bytes at `start`; a header split across reads is
    /// gathered in the connection's 16 bytes, payloads are consumed as they come.
    @inline(__always)
    func parse(_ i: Int, _ start: UnsafeMutablePointer<UInt8>, _ count: Int) {
        let c = conns + i
        var p = start
        let end = start + count
        while p < end || (c.pointee.inFrame && c.pointee.frameRemaining == 0) {
            if !c.pointee.inFrame {
                if c.pointee.hdrCount == 0 && end - p >= 2 {
                    let need = Self.headerLength(p[1])
                    if end - p >= need {
                        if !beginFrame(i, p) { return }
                        p += need
                    } else if !gatherHeader(i, &p, end) {
                        return
                    }
                } else if !gatherHeader(i, &p, end) {
                    return
                }
            }
            let k = min(c.pointee.frameRemaining, end - p)
            if k > 0 {
                payload(i, p, k)
                p += k
                c.pointee.frameRemaining -= k
                if c.pointee.fd < 0 { return }
            }
            if c.pointee.frameRemaining == 0 {
                endFrame(i)
                if c.pointee.fd < 0 { return }
            }
        }
    }

    @inline(__always)
    static func headerLength(_ b1: UInt8) -> Int {
        let l7 = b1 & 0x7F
        return 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + (b1 & 0x80 != 0 ? 4 : 0)
    }

    /// Copies header bytes into the connection until the header is whole; true when it is
    /// (and the frame has begun), false when the bytes ran out or the frame was refused.
    func gatherHeader(_ i: Int, _ p: inout UnsafeMutablePointer<UInt8>, _ end: UnsafeMutablePointer<UInt8>) -> Bool {
        let c = conns + i
        return withUnsafeMutableBytes(of: &c.pointee.hdr) { h -> Bool in
            while p < end {
                h[c.pointee.hdrCount] = p.pointee
                c.pointee.hdrCount += 1
                p += 1
                if c.pointee.hdrCount >= 2 && c.pointee.hdrCount == Self.headerLength(h[1]) {
                    c.pointee.hdrCount = 0
                    return beginFrame(i, h.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
            return false
        }
    }

    /// Checks a whole frame header (RFC 6455 §5.2, RFC 7692 §6) and starts the frame.
    @inline(__always)
    func beginFrame(_ i: Int, _ h: UnsafePointer<UInt8>) -> Bool {
        let c = conns + i
        let b0 = h[0], b1 = h[1]
        if b1 & 0x80 != 0 { fail(i, "masked frame from the server"); return false }
        if b0 & 0x30 != 0 { fail(i, "RSV2/RSV3 set"); return false }
        var len = Int(b1 & 0x7F)
        if len == 126 {
            len = Int(h[2]) << 8 | Int(h[3])
            if len < 126 { fail(i, "16-bit length \(len) not minimal"); return false }
        } else if len == 127 {
            var v: UInt64 = 0
            for j in 2..<10 { v = v << 8 | UInt64(h[j]) }
            if v >> 63 != 0 { fail(i, "64-bit length with the top bit set"); return false }
            if v < 65536 { fail(i, "64-bit length \(v) not minimal"); return false }
            if v > UInt64(Int32.max) { fail(i, "frame of \(v) bytes"); return false }
            len = Int(v)
        }
        let op = b0 & 0x0F
        let fin = b0 & 0x80 != 0
        let rsv1 = b0 & 0x40 != 0
        if op >= 8 {
            if op > 10 { fail(i, "reserved control opcode \(op)"); return false }
            if !fin || len > 125 { fail(i, "fragmented or long control frame (opcode \(op), \(len) B)"); return false }
            if rsv1 { fail(i, "RSV1 on a control frame"); return false }
        } else if op == 0 {
            if c.pointee.msgOpcode == 0 { fail(i, "continuation frame outside a message"); return false }
            if rsv1 { fail(i, "RSV1 on a continuation frame"); return false }
        } else if op <= 2 {
            if c.pointee.msgOpcode != 0 { fail(i, "new data frame inside a fragmented message"); return false }
            if rsv1 && c.pointee.deflate == 0 { fail(i, "RSV1 without permessage-deflate"); return false }
            if !c.pointee.outstanding {
                fail(i, "a message the client did not ask for (opcode \(op), \(len) B, phase \(c.pointee.phase))")
                return false
            }
            c.pointee.msgOpcode = op
            c.pointee.msgCompressed = rsv1
            c.pointee.msgLen = 0
            c.pointee.msgOk = true
            var verify = false
            if o.verifyEvery > 0 {
                st.pointee.verifyCounter += 1
                if st.pointee.verifyCounter >= o.verifyEvery {
                    st.pointee.verifyCounter = 0
                    verify = true
                }
            }
            c.pointee.msgVerify = verify
        } else {
            fail(i, "reserved data opcode \(op)")
            return false
        }
        c.pointee.frameOpcode = op
        c.pointee.frameFin = fin
        c.pointee.frameRemaining = len
        c.pointee.inFrame = true
        return true
    }

    @inline(__always)
    func payload(_ i: Int, _ p: UnsafeMutablePointer<UInt8>, _ k: Int) {
        let c = conns + i
        if c.pointee.frameOpcode >= 8 {
            control[i, default: []].append(contentsOf: UnsafeBufferPointer(start: p, count: k))
            return
        }
        if c.pointee.msgCompressed {
            guard let z = inflaters[i] else { fail(i, "compressed frame without an inflater"); return }
            let ok = z.feed(p, k, scratch: scratch, scratchSize: Self.scratchSize) { out, m in check(c, out, m) }
            if !ok { fail(i, "corrupt compressed message") }
            return
        }
        check(c, p, k)
    }

    /// Compares `k` echoed bytes with the sent message at the current offset.
    @inline(__always)
    func check(_ c: UnsafeMutablePointer<Conn>, _ p: UnsafePointer<UInt8>, _ k: Int) {
        let at = c.pointee.msgLen
        c.pointee.msgLen = at + k
        if at + k > size {
            c.pointee.msgOk = false
        } else if c.pointee.msgVerify && memcmp(plain + c.pointee.expect * size + at, p, k) != 0 {
            c.pointee.msgOk = false
        }
    }

    @inline(__always)
    func endFrame(_ i: Int) {
        let c = conns + i
        c.pointee.inFrame = false
        let op = c.pointee.frameOpcode
        if op >= 8 {
            controlFrame(i, op)
            return
        }
        guard c.pointee.frameFin else { return }
        if c.pointee.msgCompressed {
            guard let z = inflaters[i] else { fail(i, "compressed frame without an inflater"); return }
            let ok = StreamInflater.tail.withUnsafeBufferPointer { t in
                z.feed(t.baseAddress!, 4, scratch: scratch, scratchSize: Self.scratchSize) { out, m in check(c, out, m)
                }
            }
            if !ok { fail(i, "corrupt compressed message"); return }
            if c.pointee.deflate == 1 { z.reset() }
            st.pointee.compressedEchoes += 1
        }
        let mop = c.pointee.msgOpcode
        c.pointee.msgOpcode = 0
        if mop != opcode || c.pointee.msgLen != size || !c.pointee.msgOk {
            let what =
                mop != opcode
                ? "opcode \(mop), expected \(opcode)"
                : c.pointee.msgLen != size
                    ? "\(c.pointee.msgLen) bytes, expected \(size)"
                    : "content differs from message #\(c.pointee.expect) that was sent"
            fail(i, "wrong echo: \(what)\(c.pointee.msgCompressed ? " (compressed)" : "")")
            return
        }
        if c.pointee.msgVerify { st.pointee.verified += 1 }
        // The echo is whole: count it, and send the next message (closed loop).
        let now = monotonicNanos()
        c.pointee.outstanding = false
        st.pointee.outstanding -= 1
        st.pointee.totalEchoes += 1
        if st.pointee.measuring {
            let ns = now - c.pointee.sentAt
            st.pointee.windowMessages += 1
            st.pointee.windowLatencySumNs += ns
            if ns > st.pointee.windowMaxNs { st.pointee.windowMaxNs = ns }
            let us = Int(ns / 1000)
            hist[us < 65536 ? us : 65536 + min((us - 65536) >> 10, 65535)] += 1
        }
        if st.pointee.sending && c.pointee.phase == .open { sendNext(i, now) }
    }

    func controlFrame(_ i: Int, _ op: UInt8) {
        let c = conns + i
        let body = control[i] ?? []
        control[i] = nil
        switch op {
        case 9:  // ping: pong with the same payload
            st.pointee.pings += 1
            if c.pointee.phase == .open { sendControl(i, opcode: 10, payload: body) }
        case 10:
            break
        default:  // close
            if body.count == 1 { fail(i, "close frame with a 1-byte payload"); return }
            let code = body.count >= 2 ? Int(body[0]) << 8 | Int(body[1]) : -1
            if c.pointee.phase == .closeSent {
                c.pointee.gotClose = true
                if code != 1000 && code != -1 { error(i, "close reply with code \(code)") }
                // Wait for the server to close the TCP connection (RFC 6455 §7.1.1).
                return
            }
            let reason = String(decoding: body.dropFirst(2), as: UTF8.self)
            sendControl(i, opcode: 8, payload: Array(body.prefix(2)))
            fail(i, "the server closed the WebSocket: code \(code) '\(reason)'")
        }
    }

}
