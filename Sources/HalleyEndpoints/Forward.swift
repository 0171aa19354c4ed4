import HalleyCore
import HalleyCrypto
import HalleyHTTP
import HalleyHub
import HalleyLoop
import HalleyServer

/// With Redis, no sticky sessions: a request of an HTTP session (long-poll, SSE, `/halley/send`)
/// that lands on a node other than the session's owner is forwarded to the owner, as is, and
/// its answer relayed byte for byte as it comes (a held poll, or a stream for as long as it
/// lasts). The session's state never moves: every message once, in order. The owner is the
/// node whose number is in the session id (`SessionID.node`); its address is in Redis.
extension HubEndpoints {
    /// Marks a forwarded request: the node that gets it serves it, never forwards it again.
    static let forwardedHeader = "X-Halley-Forwarded"

    /// The node that must serve a request for session `id` when it is not this one (nil: here).
    func ownerElsewhere(_ id: SessionID, _ request: HTTPRequest) -> Int? {
        guard hub.clustered, id.node != 0, request.head.headers[Self.forwardedHeader] == nil else { return nil }
        let mine = hub.nodeNumber.load(ordering: .relaxed)
        if id.node == mine || hub.previousNodeNumbers.withLock({ $0.contains(id.node) }) { return nil }
        return id.node
    }

    /// Forwards to node `node`; `orElse` serves it here when that node is gone (its key expired,
    /// or it does not answer): the session then is unknown here too, and the client is told so
    /// (`expired`, as for any session that ended), and recovers with `halley:since`.
    func forward(_ request: HTTPRequest, _ responder: Responder, node: Int, orElse local: @escaping () -> Void) {
        hub.broker.nodeAddress(node, loop: responder.loopIndex) { [self] address in
            guard let address, let url = try? HTTPURL("http://\(address)/"), let secret = hub.broker.forwardingSecret
            else { return local() }
            relay(request, responder, to: url, address: address, secret: secret, orElse: local)
        }
    }

    /// Fields that belong to one connection (RFC 9110 §7.6.1), that the relay sets itself, or
    /// that only a node may send. Any case.
    static func isHopByHop(_ name: String) -> Bool {
        switch name.lowercased() {
        case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
            "content-length", "host", "date", "x-halley-forwarded", "x-halley-client":
            return true
        default:
            return false
        }
    }

    /// The client address the forwarding node saw (taken only with the cluster's secret).
    static let clientHeader = "X-Halley-Client"

    /// A request forwarded by a node of this cluster (it shows the cluster's secret).
    func isForwardedByANode(_ request: HTTPRequest) -> Bool {
        guard hub.clustered, let shown = request.head.headers[Self.forwardedHeader],
            let secret = hub.broker.forwardingSecret
        else { return false }
        return Digest.constantTimeEqual(bytes: shown.utf8, secret.utf8)
    }

    func relay(
        _ request: HTTPRequest, _ responder: Responder, to url: HTTPURL, address: String, secret: String,
        orElse local: @escaping () -> Void
    ) {
        var head = "\(request.method) \(request.head.target) HTTP/1.1\r\nHost: \(address)\r\nConnection: close\r\n"
        head += "\(Self.forwardedHeader): \(secret)\r\n\(Self.clientHeader): \(clientAddress(request, responder))\r\n"
        for (name, value) in request.head.headers where !Self.isHopByHop(name) {
            head += "\(name): \(value)\r\n"
        }
        head += "Content-Length: \(request.body.count)\r\n\r\n"
        hub.forwardedRequests.add(1, ordering: .relaxed)
        var options = HTTPClient.Options()
        options.connectTimeoutMillis = 2000
        options.timeoutMillis = 0  // a stream lasts as long as the client keeps it
        options.limits.maxBodyBytes = 1 << 40  // taken as it comes: the bound is the client's buffer below
        let bound = config.sessionBufferBytes
        let state = RelayState()
        // The owner answers a poll within --poll-timeout and starts a stream at once: a head
        // that takes much longer means the owner hangs.
        let headDeadline = Int64(config.pollTimeout + 15) * 1000
        state.timer = responder.loop.schedule(afterMillis: headDeadline) {
            state.timer = nil
            guard state.stream == nil, let call = state.call else { return }
            Log.warning("forward to \(address): no answer within \(headDeadline) ms")
            call.cancel()
        }
        // The client going before the answer ends the relay (and so the owner's request).
        responder.onDisconnect {
            state.clientGone = true
            state.call?.cancel()
        }
        let call = HTTPClient.stream(
            on: responder.loop, url: url, request: Array(head.utf8) + request.body, options: options,
            head: { status, headers in
                state.cancelTimer(responder.loop)
                var fields: [(String, String)] = []
                for (n, v) in headers where !Self.isHopByHop(n) { fields.append((n, v)) }
                guard let st = responder.startStream(status: status, headers: fields) else {
                    state.clientGone = true
                    state.call?.cancel()
                    return
                }
                state.stream = st
                st.onClose = {
                    state.clientGone = true
                    state.call?.cancel()
                }
            },
            body: { bytes in
                guard let st = state.stream else { return }
                st.write([.bytes(bytes)])
                if st.bufferedBytes > bound {
                    // A client slower than the owner: the owner sees only the relay, so the bound
                    // of its session buffer is kept here.
                    Log.info("forward to \(address): the client is \(st.bufferedBytes) B behind: closing")
                    state.clientGone = true
                    st.abort()
                    state.call?.cancel()
                }
            },
            done: { result in
                state.cancelTimer(responder.loop)
                state.call = nil
                state.finished = true
                if let st = state.stream {
                    // Ended by the owner: the body is whole; failed: cut short, as it was.
                    if case .failure = result { st.abort() } else { st.end() }
                } else if !state.clientGone, case .failure(let e) = result {
                    // No answer at all: the owner died (its key not yet expired) or hangs.
                    // Served here: the session is unknown, the client moves on.
                    Log.info("forward to \(address) failed before an answer: \(e); served here")
                    local()
                }
            })
        if !state.finished { state.call = call }
    }

    /// One relayed request's stream, call and head timer (the callbacks refer to each other).
    /// Loop-confined.
    final class RelayState {
        var stream: HTTPStream?
        var call: HTTPClient.Call?
        var timer: UInt64?
        /// The client went (or is too slow): nothing more is answered.
        var clientGone = false
        var finished = false

        func cancelTimer(_ loop: EventLoop) {
            if let t = timer { loop.cancel(t) }
            timer = nil
        }
    }
}
