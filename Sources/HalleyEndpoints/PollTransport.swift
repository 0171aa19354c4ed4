import HalleyCore
import HalleyHub
import HalleyProtocol
import HalleyServer

/// One waiting long-poll (`GET /halley/poll`): attached to its session while it waits, it
/// collects what the session sends it (on attaching, the messages after its cursor; then new
/// ones) and answers as soon as there is one (at the end of the loop turn, so a burst goes in
/// one answer), or empty after `pollTimeout`. Loop-confined.
final class PollTransport: Transport {
    var kind: TransportKind { .longPoll }
    unowned(unsafe) let endpoints: LoopEndpoints  // outlives its transports
    let responder: Responder
    var session: Session?
    let cursor: UInt64
    let since: Int32
    var answered = false
    var queuedForAnswer = false
    /// Messages outside the session order (errors, pongs) for the answer.
    var controls: [[UInt8]] = []
    /// Messages of the session's order for the answer, with their seq.
    var messages: [(seq: UInt64, message: OutMessage)] = []
    /// The first answer of a session carries its id and token at the top level.
    let introduce: Bool
    let origin: String?

    static let plainHeaders = SharedBytes(
        Array("Content-Type: application/json\r\nCache-Control: no-cache, no-store\r\n".utf8))

    init(
        endpoints: LoopEndpoints, responder: Responder, session: Session, cursor: UInt64, introduce: Bool,
        origin: String?
    ) {
        self.endpoints = endpoints
        self.responder = responder
        self.session = session
        self.cursor = cursor
        self.since = endpoints.seconds
        self.introduce = introduce
        self.origin = origin
    }

    func send(_ m: OutMessage, seq: UInt64, delivery: Delivery?) {
        guard !answered else { return }
        messages.append((seq, m))
        endpoints.pollReady(self)
    }

    func sendControl(_ json: [UInt8]) {
        controls.append(json)
        endpoints.pollReady(self)
    }

    var bufferedBytes: Int { 0 }

    func detach(_ why: Detachment) {
        session = nil
        answer()
    }

    /// Answers now with what the session has after the cursor.
    func answer() {
        guard !answered else { return }
        answered = true
        let s = session
        session = nil
        // One buffer, sized first and written once (the answer is built per poll: each
        // session's seq differs): 64 bytes around the lists (45 used), and per message its
        // prefix, a comma and its seq tail.
        let intro = s.flatMap { s in
            introduce ? Array("\"session\":\"\(s.id)\",\"token\":\"\(s.token!.description)\",".utf8) : nil
        }
        var size = 64 + (intro?.count ?? 0) + controls.reduce(0) { $0 + $1.count + 1 }
        for (_, m) in messages { size += m.prefix.count + 1 + Wire.seqTailMax }
        var last = cursor
        let body = [UInt8](writing: size) { base in
            var w = SizedJSON.Writer(base: base)
            w.byte(UInt8(ascii: "{"))
            if let intro { intro.withUnsafeBytes { w.bytes($0) } }
            // "messages" before "cursor": the cursor is known once the messages are written.
            w.text(#""messages":["#)
            var items = 0
            for c in controls {
                if items > 0 { w.byte(UInt8(ascii: ",")) }
                c.withUnsafeBytes { w.bytes($0) }
                items += 1
            }
            for (q, m) in messages {
                if items > 0 { w.byte(UInt8(ascii: ",")) }
                w.bytes(m.prefix.buffer)
                w.append { Wire.seqTail(q, into: $0) }
                items += 1
                last = q
            }
            w.text(#"],"cursor":"#)
            w.decimal(last)
            w.byte(UInt8(ascii: "}"))
            precondition(w.count <= size, "poll answer: \(w.count) bytes written into \(size)")
            return w.count
        }
        messages.removeAll()
        var r = HTTPResponse(status: 200, body: .bytes(body))
        if let o = origin {
            r.headers = HubHTTP.jsonHeaders(origin: o)
            r.headers.append(("Cache-Control", "no-cache, no-store"))
        } else {
            r.encodedHeaders = Self.plainHeaders
        }
        responder.respond(r)
        s?.transportGone(self)
    }
}
