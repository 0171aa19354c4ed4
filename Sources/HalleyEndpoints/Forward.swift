import HalleyCore
import HalleyCrypto
import HalleyHTTP
import HalleyHub
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
        return id.node == mine ? nil : id.node
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

    /// Fields that belong to one connection (RFC 9110 §7.6.1) or that the relay sets itself.
    static func isHopByHop(_ name: String) -> Bool {
        switch name.lowercased() {
        case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
            "content-length", "host", "date":
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
        for (name, value) in request.head.headers
        where !Self.isHopByHop(name) && name != Self.forwardedHeader && name != Self.clientHeader {
            head += "\(name): \(value)\r\n"
        }
        head += "Content-Length: \(request.body.count)\r\n\r\n"
        hub.forwardedRequests.add(1, ordering: .relaxed)
        var options = HTTPClient.Options()
        options.connectTimeoutMillis = 2000
        options.timeoutMillis = 0  // a stream lasts as long as the client keeps it
        let state = RelayState()
        state.call = HTTPClient.stream(
            on: responder.loop, url: url, request: Array(head.utf8) + request.body, options: options,
            head: { status, headers in
                var fields: [(String, String)] = []
                for (n, v) in headers where !Self.isHopByHop(n) { fields.append((n, v)) }
                state.stream = responder.startStream(status: status, headers: fields)
                state.stream?.onClose = { state.call?.cancel() }  // the client went: so does the relay
            },
            body: { bytes in state.stream?.write([.bytes(bytes)]) },
            done: { result in
                defer { state.call = nil }
                if let s = state.stream {
                    s.end()
                } else if case .failure(let e) = result, state.call != nil {
                    // No answer at all: the owner died (its key not yet expired). Served here:
                    // the session is unknown, the client moves on.
                    Log.info("forward to \(address) failed before an answer: \(e); served here")
                    local()
                }
            })
    }

    /// One relayed request's stream and call (the callbacks refer to each other). Loop-confined.
    final class RelayState {
        var stream: HTTPStream?
        var call: HTTPClient.Call?
    }
}
