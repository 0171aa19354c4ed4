import HalleyCore

/// The bytes the hub sends. A published message is encoded once as a *prefix*: the JSON
/// object without its closing brace. Each session then adds its own tail — `}` for a plain
/// Pusher session, `,"halley:seq":N}` for a resumable one — so the shared part is never
/// copied or re-encoded per subscriber.
public enum Wire {
    /// `{"event":E,"channel":C,"data":D[,"halley:binary":true][,"halley:offset":O]`
    /// `user_id`: the sender of a client event on a presence channel (Pusher adds it).
    public static func eventPrefix(
        event: String, channel: String?, data: String, binary: Bool = false, offset: UInt64 = 0,
        userID: String? = nil
    ) -> [UInt8] {
        // Each string's UTF-8 in place (`withUTF8` is mutating: copies of the parameters).
        var e = event
        var c = channel ?? ""
        var d = data
        var u = userID ?? ""
        return e.withUTF8 { eb in
            c.withUTF8 { cb in
                d.withUTF8 { db in
                    u.withUTF8 { ub in
                        let en = SizedJSON.escapedCount(eb)
                        let cn = SizedJSON.escapedCount(cb)
                        let dn = SizedJSON.escapedCount(db)
                        let un = SizedJSON.escapedCount(ub)
                        // The keys, quotes, the flag and an offset take at most 105 bytes.
                        let room = en + cn + dn + un + 128
                        return [UInt8](writing: room) { base in
                            var w = SizedJSON.Writer(base: base)
                            w.text(#"{"event":"#)
                            w.string(eb, escaped: en)
                            if channel != nil {
                                w.text(#","channel":"#)
                                w.string(cb, escaped: cn)
                            }
                            w.text(#","data":"#)
                            w.string(db, escaped: dn)
                            if userID != nil {
                                w.text(#","user_id":"#)
                                w.string(ub, escaped: un)
                            }
                            if binary { w.text(#","halley:binary":true"#) }
                            if offset > 0 {
                                w.text(#","halley:offset":"#)
                                w.decimal(offset)
                            }
                            precondition(w.count <= room, "eventPrefix: \(w.count) bytes written into \(room)")
                            return w.count
                        }
                    }
                }
            }
        }
    }

    /// The header of a binary WebSocket message (without data): the message's JSON object,
    /// open like a prefix.
    public static func binaryHeaderPrefix(event: String, channel: String?, offset: UInt64) -> [UInt8] {
        var b = JSONObjectBuilder()
        b.string("event", event)
        if let c = channel { b.string("channel", c) }
        if offset > 0 { b.int("halley:offset", offset) }
        return b.open
    }

    public static let plainTail: [UInt8] = [UInt8(ascii: "}")]

    /// The most `seqTail(_:into:)` writes: its 14 bytes of text, 20 digits and the brace.
    public static let seqTailMax = 35

    /// `,"halley:seq":N}` written into `out` (at most `seqTailMax` bytes); returns its length.
    public static func seqTail(_ seq: UInt64, into out: UnsafeMutableRawPointer) -> Int {
        let head: StaticString = ",\"halley:seq\":"
        out.copyMemory(from: head.utf8Start, byteCount: head.utf8CodeUnitCount)
        var n = head.utf8CodeUnitCount
        n += writeDecimal(seq, into: out + n)
        out.storeBytes(of: UInt8(ascii: "}"), toByteOffset: n, as: UInt8.self)
        return n + 1
    }

    /// `,"halley:offset":N` written into `out` (at most `offsetFieldMax` bytes); returns its
    /// length.
    public static func offsetField(_ off: UInt64, into out: UnsafeMutableRawPointer) -> Int {
        let head: StaticString = ",\"halley:offset\":"
        out.copyMemory(from: head.utf8Start, byteCount: head.utf8CodeUnitCount)
        return head.utf8CodeUnitCount + writeDecimal(off, into: out + head.utf8CodeUnitCount)
    }

    /// The longest `offsetField` (UInt64.max has 20 digits).
    public static let offsetFieldMax = 17 + 20

    public static func seqTail(_ seq: UInt64) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: 40) { b, n in
            n = seqTail(seq, into: UnsafeMutableRawPointer(b.baseAddress!))
        }
    }

    /// Writes `v` in decimal; returns the digit count (at most 20).
    public static func writeDecimal(_ v: UInt64, into out: UnsafeMutableRawPointer) -> Int {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        return withUnsafeMutableBytes(of: &digits) { d in
            var x = v
            var n = 0
            repeat {
                d[23 - n] = UInt8(48 + x % 10)
                x /= 10
                n += 1
            } while x > 0
            out.copyMemory(from: d.baseAddress! + 24 - n, byteCount: n)
            return n
        }
    }

    /// `{"event":E[,"channel":C],"data":"<data JSON as a string>"}`: Pusher's protocol events
    /// carry their data as a JSON string.
    public static func protocolEvent(
        _ event: String, channel: String? = nil, data: JSONObjectBuilder? = nil,
        extra: (inout JSONObjectBuilder) -> Void = { _ in }
    ) -> [UInt8] {
        var b = JSONObjectBuilder()
        b.string("event", event)
        if let c = channel { b.string("channel", c) }
        if let d = data { b.string("data", String(decoding: d.closed, as: UTF8.self)) }
        extra(&b)
        return b.open
    }

    /// `pusher:error` (not resent: no seq), closed.
    public static func error(code: UInt16?, message: String) -> [UInt8] {
        var d = JSONObjectBuilder()
        d.string("message", message)
        if let c = code { d.int("code", UInt64(c)) } else { d.raw("code", Array("null".utf8)) }
        var b = JSONObjectBuilder()
        b.string("event", "pusher:error")
        b.raw("data", d.closed)
        return b.closed
    }

    public static let pong: [UInt8] = Array(#"{"event":"pusher:pong","data":{}}"#.utf8)
    public static let ping: [UInt8] = Array(#"{"event":"pusher:ping","data":{}}"#.utf8)
    public static let heartbeat: [UInt8] = Array(#"{"event":"halley:heartbeat"}"#.utf8)
    public static let reconnect: [UInt8] = Array(#"{"event":"halley:reconnect"}"#.utf8)

    // MARK: Server-Sent Events (HTML Living Standard §9.2)

    /// The prelude of a stream: a comment of `padding` bytes (so buffering proxies pass the
    /// stream at once) and the reconnection delay.
    public static func ssePrelude(padding: Int, retryMillis: Int) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: ":")]
        out.append(contentsOf: repeatElement(UInt8(ascii: " "), count: max(0, padding)))
        out.append(0x0A)
        out.append(contentsOf: "retry: \(retryMillis)\n\n".utf8)
        return out
    }

    /// `id: SEQ:SESSION:TOKEN\ndata: ` — the part before the message JSON.
    public static func sseEventHead(seq: UInt64, session: String, token: String) -> [UInt8] {
        Array("id: \(seq):\(session):\(token)\ndata: ".utf8)
    }

    public static let sseDataHead: [UInt8] = Array("data: ".utf8)
    public static let sseEventEnd: [UInt8] = [0x0A, 0x0A]

    /// Parses an SSE event id (`SEQ:SESSION:TOKEN`), as sent back in `Last-Event-ID`.
    public static func parseEventID(_ id: String) -> (seq: UInt64, session: String, token: String)? {
        let parts = id.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, let seq = UInt64(parts[0]), !parts[1].isEmpty, !parts[2].isEmpty else { return nil }
        return (seq, String(parts[1]), String(parts[2]))
    }
}
