#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux

/// The messages echo connections send, built once: up to 64 different payloads (a stale echo
/// is caught), as masked frames, and deflated with RSV1 for --deflate.
struct EchoPool {
    var count = 0
    var size = 0
    var plain: UnsafeMutablePointer<UInt8>? = nil
    var frames: [(offset: Int, length: Int)] = []
    var zframes: [(offset: Int, length: Int)] = []
    var bytes: UnsafeMutablePointer<UInt8>? = nil
    var deflatedBytes = 0

    init(_ o: Options?) {
        guard let o else { return }
        size = o.size
        count = max(1, min(64, (16 << 20) / max(size, 1)))
        plain = .allocate(capacity: max(1, count * size))
        var lcg: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(size)
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.:{}\"".utf8)
        var all: [UInt8] = []
        var rng = SystemRandomNumberGenerator()
        for k in 0..<count {
            var p = [UInt8](repeating: 0, count: size)
            for j in 0..<size {
                lcg = lcg &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                let r = UInt8(truncatingIfNeeded: lcg >> 33)
                p[j] = o.binary ? r : alphabet[Int(r) % alphabet.count]
            }
            if size >= 8 && !o.binary {
                for (j, b) in Array("#\(k)#".utf8).enumerated() { p[j] = b }
            }
            (plain! + k * size).update(from: p, count: size)
            let f = maskedFrame(opcode: o.binary ? 2 : 1, payload: p, key: rng.next())
            frames.append((all.count, f.count))
            all += f
            if o.deflate {
                let z = deflateMessage(p)
                deflatedBytes += z.count
                let zf = maskedFrame(opcode: o.binary ? 2 : 1, payload: z, key: rng.next(), rsv1: true)
                zframes.append((all.count, zf.count))
                all += zf
            }
        }
        bytes = .allocate(capacity: all.count)
        bytes!.update(from: all, count: all.count)
    }
}

/// `echo`: the closed loop, and `handshakes`.
extension Load {
    @inline(__always)
    func sendNext(_ i: Int, _ now: Int64) {
        let c = conns + i
        let k = st.pointee.nextPick
        st.pointee.nextPick = k + 1 == pool.count ? 0 : k + 1
        c.pointee.expect = Int64(k)
        c.pointee.sentAt = now
        c.pointee.awaiting = true
        st.pointee.outstanding += 1
        st.pointee.sent += 1
        let f = c.pointee.deflate != 0 ? pool.zframes[k] : pool.frames[k]
        send(i, pool.bytes! + f.offset, f.length)
    }

    /// A data frame of an echo: checked against the message sent as it comes (inflated first
    /// when compressed); the next message goes out when the echo is whole.
    @inline(__always)
    func echoFrame(
        _ i: Int, _ fin: Bool, _ op: UInt8, _ rsv1: Bool, _ p: UnsafeMutablePointer<UInt8>, _ len: Int, _ now: Int64
    ) {
        let c = conns + i
        if op != 0 {
            if c.pointee.msgOpcode != 0 { return fail(i, "new data frame inside a fragmented message") }
            if !c.pointee.awaiting { return fail(i, "a message the client did not ask for (opcode \(op), \(len) B)") }
            c.pointee.msgOpcode = op
            c.pointee.msgCompressed = rsv1
            c.pointee.msgLen = 0
            c.pointee.msgOk = true
        } else if c.pointee.msgOpcode == 0 {
            return fail(i, "continuation frame outside a message")
        }
        if c.pointee.msgCompressed {
            guard let z = inflaters[i] else { return fail(i, "compressed frame without permessage-deflate") }
            var ok = z.feed(p, len, zout, 65536) { check(c, $0, $1) }
            if fin {
                ok =
                    ok
                    && StreamInflater.tail.withUnsafeBufferPointer { t in
                        z.feed(t.baseAddress!, 4, zout, 65536) { check(c, $0, $1) }
                    }
                if c.pointee.deflate == 1 { z.reset() }
                st.pointee.compressedEchoes += 1
            }
            if !ok { return fail(i, "corrupt compressed message") }
        } else {
            check(c, p, len)
        }
        guard fin else { return }
        let mop = c.pointee.msgOpcode
        c.pointee.msgOpcode = 0
        guard mop == (o.binary ? 2 : 1), c.pointee.msgLen == pool.size, c.pointee.msgOk else {
            let why =
                mop != (o.binary ? 2 : 1)
                ? "opcode \(mop)"
                : c.pointee.msgLen != pool.size ? "\(c.pointee.msgLen) bytes, not \(pool.size)" : "content"
            return fail(i, "wrong echo: \(why)\(c.pointee.msgCompressed ? " (compressed)" : "")")
        }
        c.pointee.awaiting = false
        st.pointee.outstanding -= 1
        st.pointee.echoes += 1
        if st.pointee.measuring {
            st.pointee.windowCount += 1
            lat.add(now - c.pointee.sentAt)
        }
        guard st.pointee.sending && c.pointee.state == .open else { return }
        if o.openLoop {
            pushIdle(i)
        } else {
            sendNext(i, now)
        }
    }

    /// Open loop: sends every message due by the end of the current millisecond, each on a free
    /// connection (the timer fires every millisecond). The bursts do not depend on how fast
    /// the server answers, so two servers at the same rate get the same work.
    @inline(__always)
    func echoTick(_ now: Int64) {
        let s = st
        let ms = (now - s.pointee.scheduleStart) / 1_000_000
        if ms != s.pointee.lastTick {
            // A millisecond skipped: this burst carries two (or more) of them.
            if s.pointee.lastTick >= 0 && ms > s.pointee.lastTick + 1 { s.pointee.lateTicks += 1 }
            s.pointee.ticks += 1
            s.pointee.lastTick = ms
        }
        let due = Int(Double(ms + 1) * o.rate / 1000)
        while s.pointee.scheduled < due {
            s.pointee.scheduled += 1
            var sent = false
            while s.pointee.idleCount > 0 && !sent {
                let i = idle[s.pointee.idleHead]
                s.pointee.idleHead = s.pointee.idleHead + 1 == n ? 0 : s.pointee.idleHead + 1
                s.pointee.idleCount -= 1
                if conns[i].state == .open && !conns[i].awaiting {
                    sendNext(i, monotonicNanos())  // latency from its own send, not the burst's start
                    sent = true
                }
            }
            if !sent { s.pointee.missed += 1 }
        }
    }

    /// Queues connection `i` (no message in flight) behind the others.
    @inline(__always)
    func pushIdle(_ i: Int) {
        let s = st
        var at = s.pointee.idleHead + s.pointee.idleCount
        if at >= n { at -= n }
        idle[at] = i
        s.pointee.idleCount += 1
    }

    /// Starts (or, with `false`, stops) the open loop's millisecond timer.
    func echoTimer(_ on: Bool) {
        var spec = itimerspec()
        if on {
            spec.it_interval = timespec(tv_sec: 0, tv_nsec: 1_000_000)
            spec.it_value = spec.it_interval
        }
        if timerfd_settime(timerfd, 0, &spec, nil) != 0 { warn("timerfd_settime: \(errnoString())") }
    }

    /// Compares `k` echoed bytes with the message sent, at the current offset.
    @inline(__always)
    func check(_ c: UnsafeMutablePointer<Conn>, _ p: UnsafePointer<UInt8>, _ k: Int) {
        let at = c.pointee.msgLen
        c.pointee.msgLen = at + k
        if at + k > pool.size || memcmp(pool.plain! + Int(c.pointee.expect) * pool.size + at, p, k) != 0 {
            c.pointee.msgOk = false
        }
    }
}
