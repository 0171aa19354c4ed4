import HalleyCore
import HalleyHTTP
import HalleyWebSocket

/// Upgrading an HTTP connection to WebSocket (RFC 6455 §4.2): the handshake answered with 101,
/// then the socket, its loop and its descriptor handed to a `WebSocketConnection`.
extension HTTPConnection {
    func upgrade(
        _ request: HTTPRequest, serial s: UInt32, endpoint: WebSocketHandshake.Endpoint,
        _ makeDelegate: (HTTPRequest) -> WebSocketDelegate?
    ) {
        guard s == serial, answerable, !closed else { return }
        if ctx.shuttingDown {
            respond(.text(503, "Service Unavailable: shutting down\n"), serial: s)
            return
        }
        var ep = endpoint
        ep.compression = ep.compression && ctx.config.webSocket.compression
        ep.clientContextTakeover = ctx.config.webSocket.clientContextTakeover
        let head = request.head
        switch WebSocketHandshake.evaluate(
            isGet: head.method == .get, minorVersion: head.minorVersion,
            values: { head.headers.values($0) }, endpoint: ep)
        {
        case .refuse(let status, let headers, let reason):
            Log.info("fd \(fd): websocket handshake refused: \(status) \(reason)")
            respond(.text(status, reason + "\n", headers: headers), serial: s)
        case .accept(let headers, let deflate, let subprotocol):
            guard let delegate = makeDelegate(request) else {
                respond(.text(404, "Not Found\n"), serial: s)
                return
            }
            ctx.cork(for: self)
            ctx.corkAppend(ServerTables.statusLines[101])
            for (n, v) in headers { ctx.corkAppend(Array("\(n): \(v)\r\n".utf8)) }
            ctx.corkAppend(ServerTables.crlf)
            ctx.count(.requests1xx)
            ctx.count(.wsUpgrades)
            let ws = WebSocketConnection(
                upgrading: self, delegate: delegate, deflate: deflate, subprotocol: subprotocol)
            exchange = .upgrading(ws)
            // A late answer: no event of ours will come to finish the hand-over.
            if !inEvent { finishUpgrade(ws) }
        }
    }

    /// Hands the socket to the WebSocket: the 101 goes out first, then any frames that came
    /// with the request are read by the new owner.
    func finishUpgrade(_ next: Connection) {
        guard let ws = next as? WebSocketConnection else { return }
        if ctx.isCorkOwner(self) { ctx.flushCork() }
        if closed { return }
        ws.out = out
        out = nil
        // The address's connection count moves with the socket (here, once the socket is the
        // WebSocket's for good: an HTTP connection that closed before counts itself down).
        ws.countedPeer = countedPeer
        countedPeer = false
        ctx.replace(self, with: ws)
        let leftover = pendingIn
        pendingIn = nil
        ws.inEvent = true
        ws.delegate.webSocketDidOpen(ws)
        if let p = leftover, !p.isEmpty {
            ws.receive(UnsafeMutableRawBufferPointer(start: p.base + p.readerIndex, count: p.readableBytes))
        }
        ws.inEvent = false
        if !ws.closed {
            if ctx.isCorkOwner(ws) { ctx.flushCork() }
            ws.updateInterest()
        }
    }
}
