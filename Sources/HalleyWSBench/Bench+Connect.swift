#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux

/// Opening connections and the HTTP upgrade.
extension Bench {
    // MARK: connecting

    func openMore() {
        while st.pointee.connecting < o.connectInflight && nextToOpen < n {
            let i = nextToOpen
            nextToOpen += 1
            startConnect(i)
        }
    }

    func startConnect(_ i: Int) {
        let c = conns + i
        let fd = socket(
            AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 {
            error(i, "socket: \(errnoString())")
            st.pointee.failed += 1
            return
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if rc != 0 && errno != EINPROGRESS {
            error(i, "connect: \(errnoString())")
            Glibc.close(fd)
            st.pointee.failed += 1
            return
        }
        c.pointee.fd = fd
        c.pointee.phase = .connecting
        st.pointee.live += 1
        st.pointee.connecting += 1
        if halley_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, Self.evIn | Self.evOut, UInt64(i)) != 0 {
            fail(i, "epoll_ctl: \(errnoString())")
        }
    }

    func connected(_ i: Int) {
        let c = conns + i
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(c.pointee.fd, SOL_SOCKET, SO_ERROR, &err, &len)
        if err != 0 {
            fail(i, "connect: \(errnoString(err))")
            return
        }
        if tls {
            guard let ctx = sslCtx, let ssl = TLSClient.newSession(ctx, fd: c.pointee.fd) else {
                fail(i, "SSL_new: \(TLSClient.lastError())")
                return
            }
            ssls[i] = ssl
            c.pointee.phase = .tls
            tlsHandshakeStep(i)
            return
        }
        sendUpgrade(i)
    }

    /// The HTTP upgrade request (over TLS once its handshake is done).
    func sendUpgrade(_ i: Int) {
        let c = conns + i
        var key = [UInt8](repeating: 0, count: 16)
        for j in 0..<16 { key[j] = UInt8.random(in: 0...255, using: &rng) }
        let keyText = base64(key)
        acceptValues[i] = base64(sha1(Array((keyText + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)))
        var req = "GET \(o.path) HTTP/1.1\r\nHost: \(o.host):\(o.port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        req += "Sec-WebSocket-Key: \(keyText)\r\nSec-WebSocket-Version: 13\r\n"
        if o.deflate { req += "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n" }
        req += "\r\n"
        c.pointee.phase = .handshake
        _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, c.pointee.fd, Self.evIn, UInt64(i))
        let bytes = Array(req.utf8)
        bytes.withUnsafeBufferPointer { sendBytes(i, $0.baseAddress!, $0.count) }
    }

    func handshakeBytes(_ i: Int, _ got: Int) {
        let c = conns + i
        var buf = handshakes[i] ?? []
        buf.append(contentsOf: UnsafeBufferPointer(start: rbuf, count: got))
        guard let end = Self.headEnd(buf) else {
            if buf.count > 16384 { fail(i, "no end of the response head in 16 KiB") } else { handshakes[i] = buf }
            return
        }
        handshakes[i] = nil
        let head = String(decoding: buf[..<end], as: UTF8.self)
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        guard let status = lines.first, status.hasPrefix("HTTP/1.1 101") else {
            fail(i, "handshake refused: '\(lines.first ?? "")'")
            return
        }
        var headers: [String: [String]] = [:]
        for l in lines.dropFirst() {
            guard let colon = l.firstIndex(of: ":") else { continue }
            headers[l[..<colon].lowercased(), default: []].append(Self.trim(l[l.index(after: colon)...]))
        }
        guard headers["upgrade"]?.first?.lowercased() == "websocket" else {
            fail(i, "101 without Upgrade: websocket"); return
        }
        guard headers["connection"]?.first?.lowercased().contains("upgrade") == true else {
            fail(i, "101 without Connection: upgrade"); return
        }
        guard let accept = headers["sec-websocket-accept"], accept.count == 1, accept[0] == acceptValues[i] else {
            fail(i, "Sec-WebSocket-Accept \(headers["sec-websocket-accept"] ?? []) != \(acceptValues[i] ?? "?")")
            return
        }
        acceptValues[i] = nil
        if let ext = headers["sec-websocket-extensions"] {
            let value = ext.joined(separator: ", ")
            guard o.deflate else { fail(i, "extension '\(value)' the client did not offer"); return }
            let params = value.split(separator: ";").map { Self.trim($0).lowercased() }
            guard params.first == "permessage-deflate", !value.contains(",") else {
                fail(i, "unexpected extensions '\(value)'"); return
            }
            for p in params.dropFirst() {
                let name = p.split(separator: "=").first.map(String.init) ?? p
                guard
                    ["server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits"].contains(
                        name)
                else {
                    fail(i, "permessage-deflate parameter '\(p)' not acceptable to this client")
                    return
                }
            }
            extensionsSeen[value, default: 0] += 1
            c.pointee.deflate = params.contains("server_no_context_takeover") ? 1 : 2
            inflaters[i] = StreamInflater()
        } else {
            extensionsSeen["(none)", default: 0] += 1
        }
        c.pointee.phase = .open
        st.pointee.connecting -= 1
        st.pointee.opened += 1
        openMore()
        if end + 4 < buf.count {
            var rest = Array(buf[(end + 4)...])
            rest.withUnsafeMutableBufferPointer { parse(i, $0.baseAddress!, $0.count) }
        }
    }

    /// Index of "\r\n\r\n" in `b`.
    static func headEnd(_ b: [UInt8]) -> Int? {
        guard b.count >= 4 else { return nil }
        for j in 0...(b.count - 4) where b[j] == 13 && b[j + 1] == 10 && b[j + 2] == 13 && b[j + 3] == 10 { return j }
        return nil
    }

    static func trim(_ s: Substring) -> String {
        var t = s
        while let f = t.first, f == " " || f == "\t" { t = t.dropFirst() }
        while let l = t.last, l == " " || l == "\t" { t = t.dropLast() }
        return String(t)
    }

}
