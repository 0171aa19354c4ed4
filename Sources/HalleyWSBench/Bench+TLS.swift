#if canImport(Glibc)
import Glibc
#endif
import CHalleyLinux
import COpenSSL

/// wss: the TLS handshake before the upgrade, and reading and writing through OpenSSL on the
/// socket. The plain path never comes here (one `tls` test in `readable` and `sendBytes`).
extension Bench {
    /// Runs the client handshake as far as the socket allows; when it is done, sends the
    /// HTTP upgrade.
    func tlsHandshakeStep(_ i: Int) {
        let c = conns + i
        guard let ssl = ssls[i] else { return }
        let r = SSL_do_handshake(ssl)
        if r == 1 {
            tlsSeen[TLSClient.summary(ssl), default: 0] += 1
            // Back to reading only; the upgrade's write sets EPOLLOUT again if it blocks.
            _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, c.pointee.fd, Self.evIn, UInt64(i))
            sendUpgrade(i)
            return
        }
        let saved = errno
        let e = SSL_get_error(ssl, r)
        switch e {
        case SSL_ERROR_WANT_READ:
            _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, c.pointee.fd, Self.evIn, UInt64(i))
        case SSL_ERROR_WANT_WRITE:
            _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, c.pointee.fd, Self.evIn | Self.evOut, UInt64(i))
        default:
            fail(i, "TLS handshake: \(TLSClient.describe(ssl, r, e, savedErrno: saved))")
        }
    }

    /// Plaintext from every record the socket holds. Level-triggered epoll cannot see records
    /// OpenSSL has already read ahead, so this reads until OpenSSL needs the socket again.
    func readableTLS(_ i: Int) {
        let c = conns + i
        if c.pointee.tlsReadWantsWrite {
            c.pointee.tlsReadWantsWrite = false
            if !c.pointee.blocked { _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, c.pointee.fd, Self.evIn, UInt64(i)) }
        }
        while true {
            guard c.pointee.fd >= 0, let ssl = ssls[i] else { return }
            let got = SSL_read(ssl, rbuf, Int32(Self.rbufSize))
            if got > 0 {
                if c.pointee.phase == .handshake {
                    handshakeBytes(i, Int(got))
                } else {
                    parse(i, rbuf, Int(got))
                }
                continue
            }
            let saved = errno
            let e = SSL_get_error(ssl, got)
            switch e {
            case SSL_ERROR_WANT_READ:
                return
            case SSL_ERROR_WANT_WRITE:
                c.pointee.tlsReadWantsWrite = true
                _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, c.pointee.fd, Self.evIn | Self.evOut, UInt64(i))
                return
            case SSL_ERROR_ZERO_RETURN:
                eof(i)  // close_notify (or a FIN: SSL_OP_IGNORE_UNEXPECTED_EOF)
                return
            default:
                ERR_clear_error()
                if c.pointee.phase == .closeSent {
                    st.pointee.resets += 1
                    closeConn(i)
                } else {
                    fail(
                        i, "SSL_read: \(TLSClient.describe(ssl, got, e, savedErrno: saved)) (phase \(c.pointee.phase))")
                }
                return
            }
        }
    }

    /// `sendBytes` over TLS (not blocked): what OpenSSL does not take now is queued. After a
    /// WANT_WRITE OpenSSL holds part of the bytes in a record of its own and wants the same
    /// bytes again: the whole rest is queued (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows the
    /// queue to be another buffer).
    @inline(__always)
    func sendBytesTLS(_ i: Int, _ p: UnsafePointer<UInt8>, _ len: Int) {
        let c = conns + i
        guard let ssl = ssls[i] else { return }
        var w = Int(SSL_write(ssl, p, Int32(len)))
        if w == len { return }
        if w <= 0 {
            let saved = errno
            let e = SSL_get_error(ssl, Int32(w))
            guard e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ else {
                ERR_clear_error()
                fail(i, "SSL_write: \(TLSClient.describe(ssl, Int32(w), e, savedErrno: saved))")
                return
            }
            w = 0
        }
        queues[i] = Array(UnsafeBufferPointer(start: p + w, count: len - w))
        c.pointee.blocked = true
        _ = halley_epoll_ctl(epfd, EPOLL_CTL_MOD, c.pointee.fd, Self.evIn | Self.evOut, UInt64(i))
    }

    func flushQueueTLS(_ i: Int, _ q: inout [UInt8]) {
        let c = conns + i
        guard let ssl = ssls[i] else { return }
        let w = q.withUnsafeBytes { Int(SSL_write(ssl, $0.baseAddress, Int32($0.count))) }
        if w <= 0 {
            let saved = errno
            let e = SSL_get_error(ssl, Int32(w))
            if e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ { return }
            ERR_clear_error()
            fail(i, "SSL_write: \(TLSClient.describe(ssl, Int32(w), e, savedErrno: saved))")
            return
        }
        if w < q.count {
            q.removeFirst(w)
            queues[i] = q
            return
        }
        queues[i] = nil
        c.pointee.blocked = false
        _ = halley_epoll_ctl(
            epfd, EPOLL_CTL_MOD, c.pointee.fd, Self.evIn | (c.pointee.tlsReadWantsWrite ? Self.evOut : 0), UInt64(i))
    }
}
