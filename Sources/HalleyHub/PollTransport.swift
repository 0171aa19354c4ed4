import HalleyCore
import HalleyProtocol
import HalleyServer

/// One waiting long-poll (`GET /halley/poll`): attached to its session while it waits, it
/// answers with every message after its cursor as soon as there is one (at the end of the
/// loop turn, so a burst goes in one answer), or empty after `pollTimeout`. Loop-confined.
final class PollTransport: Transport {
    unowned let loopHub: LoopHub
    let responder: Responder
    var session: Session?
    let cursor: UInt64
    let since: Int32
    var answered = false
    var queuedForAnswer = false
    /// Messages outside the session order (errors, pongs) for the answer.
    var controls: [[UInt8]] = []
    /// The first answer of a session carries its id and token at the top level.
    let introduce: Bool
    let origin: String?

    init(loopHub: LoopHub, responder: Responder, session: Session, cursor: UInt64, introduce: Bool, origin: String?) {
        self.loopHub = loopHub
        self.responder = responder
        self.session = session
        self.cursor = cursor
        self.since = loopHub.seconds
        self.introduce = introduce
        self.origin = origin
    }

    func send(_ m: OutMessage, seq: UInt64, delivery: Delivery?) { loopHub.pollReady(self) }

    func sendControl(_ json: [UInt8]) {
        controls.append(json)
        loopHub.pollReady(self)
    }

    var bufferedBytes: Int { 0 }

    func detach(code: UInt16, reason: String) {
        session = nil
        answer()
    }

    /// Answers now with what the session has after the cursor.
    func answer() {
        guard !answered else { return }
        answered = true
        let s = session
        session = nil
        var body: [UInt8] = Array("{".utf8)
        var last = cursor
        var items: [[UInt8]] = controls
        if let s = s {
            if introduce {
                body += Array("\"session\":\"\(s.id)\",\"token\":\"\(s.token!.description)\",".utf8)
            }
            for (q, m) in s.pending(after: cursor) {
                var item = Array(m.prefix.buffer)
                item += Wire.seqTail(q)
                items.append(item)
                last = q
            }
        }
        body += Array("\"cursor\":\(last),\"messages\":[".utf8)
        for (k, i) in items.enumerated() {
            if k > 0 { body.append(UInt8(ascii: ",")) }
            body += i
        }
        body += Array("]}".utf8)
        var r = HTTPResponse(status: 200, headers: HubHTTP.jsonHeaders(origin: origin), body: .bytes(body))
        r.headers.append(("Cache-Control", "no-cache, no-store"))
        responder.respond(r)
        s?.transportGone(self)
    }
}
