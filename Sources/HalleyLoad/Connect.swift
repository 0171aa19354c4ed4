#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux
import COpenSSL

/// Opening connections: TCP, TLS, the WebSocket upgrade, each protocol's first step.
extension Load {
    // MARK: connecting

    /// Opens connections while fewer than 256 are being opened.
    func openMore() {
        while st.pointee.connecting < 256 && nextToOpen < n {
            let i = nextToOpen
            nextToOpen += 1
            st.pointee.connecting += 1
            prepareFirstRequest(i)
            if !startConnect(i) {
                st.pointee.connecting -= 1
                st.pointee.failed += 1
            }
        }
    }

    func startConnect(_ i: Int) -> Bool {
        let c = conns + i
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            error(i, "socket: \(errnoString())")
            return false
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let rc = withUnsafePointer(to: addrs[server(i)]) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if rc != 0 && errno != EINPROGRESS {
            error(i, "connect: \(errnoString())")
            Glibc.close(fd)
            return false
        }
        c.pointee.fd = fd
        c.pointee.state = .connecting
        c.pointee.sentAt = monotonicNanos()
        st.pointee.live += 1
        if halley_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, Self.evIn | Self.evOut, UInt64(i)) != 0 {
            error(i, "epoll_ctl: \(errnoString())")
            closeConn(i)
            return false
        }
        return true
    }

    /// Closes and opens the connection again (HTTP keep-alive connections).
    func reopen(_ i: Int) {
        conns[i].reopen = false
        closeConn(i)
        if !startConnect(i) { fail(i, "could not reconnect") }
    }

    func connected(_ i: Int) {
        let c = conns + i
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(c.pointee.fd, SOL_SOCKET, SO_ERROR, &err, &len)
        if err != 0 { return fail(i, "connect: \(errnoString(err))") }
        watch(i, out: false)
        guard let ctx = sslCtx else { return opened(i) }
        guard let ssl = SSL_new(ctx), SSL_set_fd(ssl, c.pointee.fd) == 1 else {
            return fail(i, "SSL_new: \(Self.tlsError(nil, 0, SSL_ERROR_SSL, 0))")
        }
        SSL_set_connect_state(ssl)
        ssls[i] = ssl
        c.pointee.state = .tls
        tlsStep(i)
    }

    /// The client handshake as far as the socket allows.
    func tlsStep(_ i: Int) {
        guard let ssl = ssls[i] else { return }
        let r = SSL_do_handshake(ssl)
        if r == 1 {
            watch(i, out: false)
            if o.mode == .echo || st.pointee.handshakes < 8 || st.pointee.handshakes & 1023 == 0 {
                seenTLS[Self.tlsSummary(ssl), default: 0] += 1
            }
            return opened(i)
        }
        let saved = errno, e = SSL_get_error(ssl, r)
        if e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE { return watch(i, out: e == SSL_ERROR_WANT_WRITE) }
        fail(i, "TLS handshake: \(Self.tlsError(ssl, r, e, saved))")
    }

    /// The connection is open (TLS done): the protocol's first step.
    func opened(_ i: Int) {
        let c = conns + i
        switch c.pointee.kind {
        case .echo, .ws:
            var key = [UInt8](repeating: 0, count: 16)
            for j in 0..<16 { key[j] = UInt8.random(in: 0...255, using: &rng) }
            let keyText = base64(key)
            acceptValues[i] = base64(sha1(Array((keyText + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)))
            let path =
                c.pointee.kind == .echo
                ? o.path
                : o.server == .halley ? "/app/\(o.appKey)?protocol=7&client=bench&version=1" : "/sub/\(o.channel)"
            let (host, port) = servers[server(i)]
            var req = "GET \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            req += "Sec-WebSocket-Key: \(keyText)\r\nSec-WebSocket-Version: 13\r\n"
            if o.deflate { req += "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n" }
            c.pointee.state = .upgrading
            send(i, Array((req + "\r\n").utf8))
        case .longpoll, .xhr:
            c.pointee.state = .open
            sendRequest(i)
            // Nchan subscribes a long-poll as it arrives; the sync phase checks.
            if o.server == .nchan { markReady(i) }
        case .publisher:
            c.pointee.state = .open
            if c.pointee.awaiting { return fail(i, "reconnected with a publish request in flight") }
            freePubs[st.pointee.freeCount] = i
            st.pointee.freeCount += 1
        case .handshake:
            // A full handshake is done (the client sent its Finished).
            st.pointee.handshakes += 1
            if SSL_session_reused(ssls[i]) == 1 { st.pointee.resumed += 1 }
            if st.pointee.measuring {
                st.pointee.windowCount += 1
                lat.add(monotonicNanos() - c.pointee.sentAt)
            }
            c.pointee.state = .closing
            ERR_clear_error()
            _ = SSL_shutdown(ssls[i])  // close_notify; the server answers by closing
            readable(i)
        }
    }

    /// The HTTP upgrade's answer (`head` without the blank line).
    func upgraded(_ i: Int, _ head: String) {
        let c = conns + i
        let lines = head.split(separator: "\r\n")
        guard let status = lines.first, status.hasPrefix("HTTP/1.1 101") else {
            return fail(i, "WebSocket handshake refused: '\(lines.first ?? "")'")
        }
        var h: [String: String] = [:]
        for l in lines.dropFirst() {
            guard let colon = l.firstIndex(of: ":") else { continue }
            let name = l[..<colon].lowercased(), v = trim(l[l.index(after: colon)...])
            h[name] = h[name].map { $0 + ", " + v } ?? v
        }
        guard h["upgrade"]?.lowercased() == "websocket", h["connection"]?.lowercased().contains("upgrade") == true,
            let accept = h["sec-websocket-accept"], accept == acceptValues.removeValue(forKey: i)
        else { return fail(i, "bad 101: Upgrade, Connection or Sec-WebSocket-Accept (\(h))") }
        if let ext = h["sec-websocket-extensions"] {
            let params = ext.split(separator: ";").map { trim($0).lowercased() }
            let known = ["server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits"]
            guard o.deflate, params.first == "permessage-deflate", !ext.contains(","),
                params.dropFirst().allSatisfy({ known.contains(String($0.prefix { $0 != "=" })) })
            else { return fail(i, "extension '\(ext)' not offered or not acceptable") }
            c.pointee.deflate = params.contains("server_no_context_takeover") ? 1 : 2
            inflaters[i] = StreamInflater()
        }
        if c.pointee.kind == .echo { seenExtensions[h["sec-websocket-extensions"] ?? "(none)", default: 0] += 1 }
        c.pointee.state = .open
        c.pointee.step = o.server == .nchan ? 2 : 0
        if c.pointee.kind == .echo || o.server == .nchan { markReady(i) }
    }

    func markReady(_ i: Int) {
        guard !conns[i].ready else { return }
        conns[i].ready = true
        st.pointee.ready += 1
        st.pointee.connecting -= 1
        openMore()
    }

    // MARK: TLS

    static func tlsContext(readAhead: Bool) -> OpaquePointer {
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { fatalError("SSL_CTX_new failed") }
        // A benchmark against a certificate made for the run: no verification, no SNI, no ALPN.
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nil)
        // SSL_OP_NO_TICKET (1 << 14): no TLS 1.2 ticket asked for, so every handshake is full;
        // SSL_OP_IGNORE_UNEXPECTED_EOF (1 << 7): a FIN without close_notify ends the stream.
        _ = SSL_CTX_set_options(ctx, (UInt64(1) << 14) | (UInt64(1) << 7))
        // Partial writes like write(2), from a queue that may move between retries.
        _ = SSL_CTX_ctrl(
            ctx, SSL_CTRL_MODE, Int(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER), nil)
        // Read ahead for echo: one read(2) takes every record the socket holds.
        if readAhead { _ = SSL_CTX_ctrl(ctx, SSL_CTRL_SET_READ_AHEAD, 1, nil) }
        // No session is ever reused: the client "cache" only counts what the server sends.
        _ = SSL_CTX_ctrl(
            ctx, SSL_CTRL_SET_SESS_CACHE_MODE, Int(SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE), nil)
        SSL_CTX_sess_set_new_cb(ctx) { _, _ in
            Load.tickets += 1
            return 0
        }
        return ctx
    }

    /// "TLSv1.3 TLS_AES_256_GCM_SHA384 x25519 rsassaPss" for a finished handshake.
    static func tlsSummary(_ ssl: OpaquePointer) -> String {
        let v = SSL_get_version(ssl).map { String(cString: $0) } ?? "?"
        let c = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)).map { String(cString: $0) } ?? "?"
        let gid = Int32(truncatingIfNeeded: SSL_ctrl(ssl, SSL_CTRL_GET_NEGOTIATED_GROUP, 0, nil))
        let g = SSL_group_to_name(ssl, gid).map { String(cString: $0) } ?? "group \(gid)"
        var sig: Int32 = 0
        let s =
            SSL_get_peer_signature_type_nid(ssl, &sig) == 1 ? OBJ_nid2sn(sig).map { String(cString: $0) } ?? "?" : "?"
        return "\(v) \(c) \(g) \(s)\(SSL_session_reused(ssl) == 1 ? " resumed" : "")"
    }

    /// What a failed OpenSSL call means (the error queue cleared).
    static func tlsError(_ ssl: OpaquePointer?, _ ret: Int32, _ e: Int32, _ savedErrno: Int32) -> String {
        let code = ERR_get_error()
        ERR_clear_error()
        if code != 0 {
            var buf = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buf, buf.count)
            return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        if e == SSL_ERROR_SYSCALL {
            return ret == 0 || savedErrno == 0 ? "unexpected end of stream" : errnoString(savedErrno)
        }
        return "SSL error \(e)"
    }
}

func trim(_ s: Substring) -> String {
    var t = s
    while let f = t.first, f == " " || f == "\t" { t = t.dropFirst() }
    while let l = t.last, l == " " || l == "\t" { t = t.dropLast() }
    return String(t)
}
