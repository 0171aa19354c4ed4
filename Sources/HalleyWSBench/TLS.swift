#if canImport(Glibc)
import Glibc
#endif
import COpenSSL

/// The load tool's TLS client (`wss://`, and `--handshakes`): OpenSSL on the non-blocking
/// socket itself (`SSL_set_fd`), WANT_READ / WANT_WRITE mapped onto the epoll interest.
/// No certificate verification (a benchmark against a certificate made for the run), no
/// ALPN, no SNI (IP literals). No session is ever reused: the client keeps no session cache
/// and never calls `SSL_set_session`, and it asks for no TLS 1.2 tickets (`SSL_OP_NO_TICKET`;
/// a TLS 1.3 server may still send tickets after the handshake: they are counted, then
/// dropped), so every handshake is a full one.
enum TLSClient {
    /// Tickets (TLS 1.3 NewSessionTicket, or a TLS 1.2 session) the servers sent: counted by
    /// the new-session callback, never stored. One thread: a plain global.
    nonisolated(unsafe) static var ticketsReceived = 0

    static func makeContext(readAhead: Bool) -> OpaquePointer {
        guard let ctx = SSL_CTX_new(TLS_client_method()) else {
            warn("SSL_CTX_new: \(lastError())")
            exit(1)
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nil)
        // 1 << 14: SSL_OP_NO_TICKET; 1 << 7: SSL_OP_IGNORE_UNEXPECTED_EOF (a TCP FIN
        // without close_notify reads as the end of the stream, as over plain TCP).
        _ = SSL_CTX_set_options(ctx, (UInt64(1) << 14) | (UInt64(1) << 7))
        // Partial writes (SSL_write returns what it sent, like write(2)) from a queue that
        // may move between retries.
        _ = SSL_CTX_ctrl(
            ctx, SSL_CTRL_MODE, Int(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER), nil)
        // Read ahead: one read(2) takes every record the socket holds, instead of a 5-byte
        // header read and a body read per record.
        if readAhead { _ = SSL_CTX_ctrl(ctx, SSL_CTRL_SET_READ_AHEAD, 1, nil) }
        // The client "cache" only counts: no internal store, and the callback keeps nothing.
        _ = SSL_CTX_ctrl(
            ctx, SSL_CTRL_SET_SESS_CACHE_MODE, Int(SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE), nil)
        SSL_CTX_sess_set_new_cb(ctx) { _, _ in
            TLSClient.ticketsReceived += 1
            return 0  // not kept: OpenSSL frees it
        }
        return ctx
    }

    /// A new client SSL on `fd` (connected, non-blocking).
    static func newSession(_ ctx: OpaquePointer, fd: Int32) -> OpaquePointer? {
        guard let ssl = SSL_new(ctx) else { return nil }
        guard SSL_set_fd(ssl, fd) == 1 else {
            SSL_free(ssl)
            return nil
        }
        SSL_set_connect_state(ssl)
        return ssl
    }

    /// "TLSv1.3 TLS_AES_256_GCM_SHA384 x25519" for a finished handshake.
    static func summary(_ ssl: OpaquePointer) -> String {
        let v = SSL_get_version(ssl).map { String(cString: $0) } ?? "?"
        let c = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)).map { String(cString: $0) } ?? "?"
        let gid = Int32(truncatingIfNeeded: SSL_ctrl(ssl, SSL_CTRL_GET_NEGOTIATED_GROUP, 0, nil))
        let g = SSL_group_to_name(ssl, gid).map { String(cString: $0) } ?? "group \(gid)"
        var sig: Int32 = 0
        let s =
            SSL_get_peer_signature_type_nid(ssl, &sig) == 1 ? (OBJ_nid2sn(sig).map { String(cString: $0) } ?? "?") : "?"
        return "\(v) \(c) \(g) \(s)\(SSL_session_reused(ssl) == 1 ? " resumed" : "")"
    }

    /// The oldest error on OpenSSL's queue, as text (the queue cleared).
    static func lastError() -> String {
        let code = ERR_get_error()
        ERR_clear_error()
        guard code != 0 else { return "no detail" }
        var buf = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buf, buf.count)
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// What a failed SSL call means, for an error message.
    static func describe(_ ssl: OpaquePointer, _ ret: Int32, _ e: Int32, savedErrno: Int32) -> String {
        switch e {
        case SSL_ERROR_SYSCALL:
            let q = lastError()
            return q != "no detail"
                ? q : ret == 0 || savedErrno == 0 ? "unexpected end of stream" : errnoString(savedErrno)
        case SSL_ERROR_SSL:
            return lastError()
        default:
            return "SSL error \(e)"
        }
    }
}
