#if canImport(Glibc)
import Glibc
#endif
import COpenSSL
import HalleyCore

/// One connection's TLS state: an `SSL` between two memory BIOs, so OpenSSL never touches
/// the socket. Ciphertext read from the socket is fed in; plaintext comes out of `decrypt`;
/// plaintext to send goes through `encrypt` and the records come out of `takeOutput`, which
/// the connection writes like any other bytes (its output queue, its epoll interest). No
/// WANT_WRITE can happen: the write BIO grows; the connection's own send-buffer bounds apply
/// to what it holds. Loop-confined: the connection's loop owns it (a hand-off moves it with
/// the connection).
final class TLSSession {
    let ssl: OpaquePointer
    private(set) var rbio: OpaquePointer
    private(set) var wbio: OpaquePointer
    /// When the connection was accepted (monotonic second): the handshake deadline counts
    /// from here.
    var createdAt: Int32 = 0
    /// When the handshake finished (monotonic second), or nil while it runs.
    var establishedAt: Int32?
    /// `decrypt` ran out of complete records: nothing more comes out until new bytes arrive.
    var starved = true
    /// The first bytes of the connection (to tell plain HTTP sent to the TLS port).
    var sawFirstByte = false
    /// The peer's close_notify arrived (possibly behind data still to be handed over).
    var closeReceived = false

    init?(_ context: TLSContext) {
        ERR_clear_error()
        guard let s = SSL_new(context.ctx) else { return nil }
        guard let r = Self.memoryBIO() else {
            SSL_free(s)
            return nil
        }
        guard let w = Self.memoryBIO() else {
            BIO_free(r)
            SSL_free(s)
            return nil
        }
        SSL_set_bio(s, r, w)  // the SSL owns both BIOs now
        SSL_set_accept_state(s)
        ssl = s
        rbio = r
        wbio = w
    }

    /// An empty memory BIO; empty means "no data yet", not end of file.
    static func memoryBIO() -> OpaquePointer? {
        guard let b = BIO_new(BIO_s_mem()) else { return nil }
        _ = halley_bio_set_mem_eof_return(b, -1)
        return b
    }

    /// A memory BIO keeps the largest buffer it ever needed (a 64 KiB read makes 80 KiB): when
    /// both are empty and one grew past 16 KiB, fresh ones replace them, so a connection that
    /// once moved a large message is small again when idle.
    func shrinkIfIdle() {
        guard halley_bio_pending(rbio) == 0, halley_bio_pending(wbio) == 0, SSL_pending(ssl) == 0 else { return }
        if halley_bio_mem_capacity(rbio) > 16 * 1024, let r = Self.memoryBIO() {
            SSL_set0_rbio(ssl, r)  // frees the old one
            rbio = r
        }
        if halley_bio_mem_capacity(wbio) > 16 * 1024, let w = Self.memoryBIO() {
            SSL_set0_wbio(ssl, w)
            wbio = w
        }
    }

    deinit { SSL_free(ssl) }

    var handshakeDone: Bool { establishedAt != nil }

    /// Ciphertext from the socket.
    func feed(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        var off = 0
        while off < bytes.count {
            let n = BIO_write(rbio, bytes.baseAddress! + off, Int32(min(bytes.count - off, Int(Int32.max))))
            if n <= 0 { break }
            off += Int(n)
        }
        starved = false
    }

    enum Decrypted {
        case data(Int)
        /// No complete record: feed more ciphertext.
        case needInput
        /// The peer sent close_notify.
        case closed
        /// A fatal protocol error (garbage, a failed handshake, a refused renegotiation).
        case failed(String)
    }

    /// Plaintext into `buf` (runs the handshake first, as records arrive). Starved (OpenSSL
    /// holds neither plaintext nor unread ciphertext, noted after data too), it answers
    /// `needInput` without an SSL_read: one that can only answer WANT_READ costs about as
    /// much as one that decrypts a small record.
    func decrypt(into buf: UnsafeMutableRawBufferPointer) -> Decrypted {
        guard !starved else { return .needInput }
        halley_err_clear()
        var before = halley_bio_pending(rbio)
        var n = SSL_read(ssl, buf.baseAddress, Int32(min(buf.count, Int(Int32.max))))
        // A non-blocking SSL_read answers WANT_READ after a record that carried no application
        // data (the client's Finished, a KeyUpdate) even when more records wait in the BIO:
        // read on while it consumes something, or a request sent right behind the handshake
        // would sit in the BIO with the socket quiet.
        while n <= 0, SSL_get_error(ssl, n) == SSL_ERROR_WANT_READ {
            let after = halley_bio_pending(rbio)
            guard after > 0, after < before else { break }
            before = after
            halley_err_clear()
            n = SSL_read(ssl, buf.baseAddress, Int32(min(buf.count, Int(Int32.max))))
        }
        if n > 0 {
            starved = SSL_pending(ssl) == 0 && halley_bio_pending(rbio) == 0
            return .data(Int(n))
        }
        let e = SSL_get_error(ssl, n)
        switch e {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            starved = true
            return .needInput
        case SSL_ERROR_ZERO_RETURN:
            closeReceived = true
            return .closed
        default:
            return .failed(e == SSL_ERROR_SYSCALL ? "unexpected end of stream" : TLSContext.lastError())
        }
    }

    /// Notes a finished handshake (true the first time).
    func checkEstablished(now: Int32) -> Bool {
        guard establishedAt == nil, SSL_is_init_finished(ssl) == 1 else { return false }
        establishedAt = now
        return true
    }

    /// Plaintext to send: becomes records in the write BIO. False after a fatal error (the
    /// connection must close: the bytes did not go).
    @discardableResult
    func encrypt(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var off = 0
        halley_err_clear()
        while off < bytes.count {
            let n = SSL_write(ssl, bytes.baseAddress! + off, Int32(min(bytes.count - off, 1 << 30)))
            if n <= 0 {
                ERR_clear_error()
                return false
            }
            off += Int(n)
        }
        return true
    }

    var hasOutput: Bool { halley_bio_pending(wbio) > 0 }

    /// Whether plaintext may be waiting inside OpenSSL (a record already read from the socket).
    var hasBufferedInput: Bool { closeReceived || (!starved && (SSL_pending(ssl) > 0 || halley_bio_pending(rbio) > 0)) }

    /// Moves the records produced so far to the end of `out`.
    func takeOutput(into out: ByteBuffer) {
        var pending = halley_bio_pending(wbio)
        while pending > 0 {
            out.reserve(pending)
            let n = BIO_read(wbio, out.base + out.writerIndex, Int32(min(pending, Int(Int32.max))))
            if n <= 0 { return }
            out.didWrite(Int(n))
            pending = halley_bio_pending(wbio)
        }
    }

    /// Sends close_notify (into the write BIO).
    func shutdown() {
        ERR_clear_error()
        if SSL_is_init_finished(ssl) == 1 && (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN) == 0 { _ = SSL_shutdown(ssl) }
        ERR_clear_error()
    }

    /// The protocol and cipher agreed (for the debug log).
    var summary: String {
        let v = SSL_get_version(ssl).map { String(cString: $0) } ?? "?"
        let c = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)).map { String(cString: $0) } ?? "?"
        return "\(v) \(c)\(SSL_session_reused(ssl) == 1 ? " (resumed)" : "")"
    }
}
