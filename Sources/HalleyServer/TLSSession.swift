#if canImport(Glibc)
import Glibc
#endif
import COpenSSL
import HalleyCore

/// One connection's TLS state: an `SSL` between two memory BIOs, so OpenSSL never touches
/// the socket (for TLS 1.3, until our own records take over: the `SSL` is freed then). Ciphertext read from the socket is fed in; plaintext comes out of `decrypt`;
/// plaintext to send goes through `encrypt` and the records come out of `takeOutput`, which
/// the connection writes like any other bytes (its output queue, its epoll interest). No
/// WANT_WRITE can happen: the write BIO grows; the connection's own send-buffer bounds apply
/// to what it holds. Loop-confined: the connection's loop owns it (a hand-off moves it with
/// the connection).
final class TLSSession {
    /// OpenSSL's connection and its two BIOs (the SSL owns them). Freed once our records took
    /// over and OpenSSL's last bytes (the session tickets) were taken: about 17 KB per TLS 1.3
    /// connection that nothing reads again. Nil then, and only then (`records` is set).
    private var ssl: OpaquePointer?
    private var rbio: OpaquePointer?
    private var wbio: OpaquePointer?
    /// When the connection was accepted (monotonic second): the handshake deadline counts
    /// from here.
    var createdAt: Int32 = 0
    /// When the handshake finished (monotonic second), or nil while it runs.
    var establishedAt: Int32?
    /// OpenSSL's records: `decrypt` ran out of complete records, nothing more comes out
    /// until new bytes arrive (our own records know that by themselves).
    var starved = true
    /// The first bytes of the connection (to tell plain HTTP sent to the TLS port).
    var sawFirstByte = false
    /// The peer's close_notify arrived (possibly behind data still to be handed over).
    var closeReceived = false
    /// TLS 1.3 with an AEAD suite, once the handshake is done: our own record layer, and
    /// OpenSSL's SSL no longer reads or writes and is freed (see `TLS13Records`).
    private(set) var records: TLS13Records?
    /// Where the key-log callback leaves the traffic secrets (the SSL's app data); freed
    /// once the records take over, or with the session.
    private var secrets: UnsafeMutablePointer<halley_tls13_secrets>?
    /// What `summary` says, kept when the records take over.
    private var takenOver = ""
    /// Records our write key seals before it moves on by itself (`TLS13Records`; tests
    /// lower it).
    var rekeyAfter: UInt64 = 1 << 24

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
        if context.ownRecords {
            let p = UnsafeMutablePointer<halley_tls13_secrets>.allocate(capacity: 1)
            p.initialize(to: halley_tls13_secrets())
            _ = halley_ssl_set_app_data(s, p)
            secrets = p
        }
    }

    private func dropSecrets() {
        guard let p = secrets else { return }
        if let ssl { _ = halley_ssl_set_app_data(ssl, nil) }
        OPENSSL_cleanse(p, MemoryLayout<halley_tls13_secrets>.size)
        p.deallocate()
        secrets = nil
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
        if let r = records {
            r.shrinkIfIdle()
            return
        }
        guard let ssl, let rbio, let wbio, halley_bio_pending(rbio) == 0, halley_bio_pending(wbio) == 0,
            SSL_pending(ssl) == 0
        else { return }
        if halley_bio_mem_capacity(rbio) > 16 * 1024, let r = Self.memoryBIO() {
            SSL_set0_rbio(ssl, r)  // frees the old one
            self.rbio = r
        }
        if halley_bio_mem_capacity(wbio) > 16 * 1024, let w = Self.memoryBIO() {
            SSL_set0_wbio(ssl, w)
            self.wbio = w
        }
    }

    deinit {
        dropSecrets()
        if let ssl { SSL_free(ssl) }
    }

    /// Frees OpenSSL's connection once our records have everything it wrote. Marked shut
    /// down first (nothing is sent): SSL_free takes an SSL that never shut down for a failed
    /// connection and removes its session from the session cache (the stateless tickets of
    /// TLS 1.3, the default, would resume anyway; a stateful cache would not).
    private func releaseOpenSSL() {
        guard let s = ssl else { return }
        SSL_set_shutdown(s, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN)
        SSL_free(s)  // and both BIOs
        (ssl, rbio, wbio) = (nil, nil, nil)
    }

    var handshakeDone: Bool { establishedAt != nil }

    /// Whether OpenSSL's connection is still there (tests: gone once our records took over).
    var holdsOpenSSL: Bool { ssl != nil }

    /// Ciphertext from the socket.
    func feed(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        if let r = records {
            r.feed(bytes)
            return
        }
        guard let rbio else { return }
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
        if let r = records { return opened(r, into: buf) }
        guard !starved else { return .needInput }
        guard let ssl, let rbio else { return .failed("TLS: no connection") }
        if SSL_is_init_finished(ssl) != 1, let d = handshake(ssl, rbio) {
            return d
        }
        if let r = records { return opened(r, into: buf) }
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

    private func opened(_ r: TLS13Records, into buf: UnsafeMutableRawBufferPointer) -> Decrypted {
        switch r.open(into: buf) {
        case .data(let n): return .data(n)
        case .needInput:
            // A KeyUpdate the peer asked for goes out now, not with our next data.
            return r.sealOwed() ? .needInput : .failed("TLS: sealing a KeyUpdate failed")
        case .closed:
            closeReceived = true
            return .closed
        case .failed(let why): return .failed(why)
        }
    }

    /// Runs the handshake on what was fed (SSL_do_handshake, not SSL_read, so that OpenSSL
    /// stops at its end and reads no application data); nil once it is done (the records
    /// may have taken over), else what `decrypt` answers.
    private func handshake(_ ssl: OpaquePointer, _ rbio: OpaquePointer) -> Decrypted? {
        var before = halley_bio_pending(rbio)
        while true {
            let written = wbio.map { halley_bio_pending($0) } ?? 0
            halley_err_clear()
            let rc = SSL_do_handshake(ssl)
            if rc == 1 {
                takeOver(ssl, rbio, ticketsFrom: written)
                return nil
            }
            let e = SSL_get_error(ssl, rc)
            guard e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE else {
                return .failed(e == SSL_ERROR_SYSCALL ? "unexpected end of stream" : TLSContext.lastError())
            }
            // A record that finished no step (a ChangeCipherSpec): on while it consumes.
            let after = halley_bio_pending(rbio)
            guard after > 0, after < before else {
                starved = true
                return .needInput
            }
            before = after
        }
    }

    /// TLS 1.3 with an AEAD suite and both secrets reported: our record layer takes over.
    /// `ticketsFrom`: where the write BIO stood before the handshake's last step, whose
    /// records (the session tickets) OpenSSL sealed with the first server application key:
    /// they are counted into our first sequence number, and each one is opened with that key
    /// first (a miscount would reuse a nonce; anything unexpected leaves OpenSSL in charge).
    /// Not taken over either: a negotiated max_fragment_length (our records are up to 16 KiB),
    /// anything OpenSSL still buffers, early data.
    private func takeOver(_ ssl: OpaquePointer, _ rbio: OpaquePointer, ticketsFrom written: Int) {
        defer { dropSecrets() }
        guard let sp = secrets, let wbio, SSL_version(ssl) == TLS1_3_VERSION, SSL_has_pending(ssl) == 0,
            SSL_get_early_data_status(ssl) == SSL_EARLY_DATA_NOT_SENT,
            SSL_SESSION_get_max_fragment_length(SSL_get_session(ssl)) == 0,
            let cipher = SSL_get_current_cipher(ssl),
            let suite = TLS13Records.Suite(protocolID: Int32(SSL_CIPHER_get_protocol_id(cipher)))
        else { return }
        var client = withUnsafeBytes(of: &sp.pointee.client) { Array($0.prefix(Int(sp.pointee.clientLen))) }
        var server = withUnsafeBytes(of: &sp.pointee.server) { Array($0.prefix(Int(sp.pointee.serverLen))) }
        defer {
            OPENSSL_cleanse(&client, client.count)
            OPENSSL_cleanse(&server, server.count)
        }
        guard let seq = ticketRecords(wbio, from: written, suite: suite, serverSecret: server),
            let r = TLS13Records(
                suite: suite, clientSecret: client, serverSecret: server, writeSeq: seq, rekeyAfter: rekeyAfter)
        else { return }
        // Ciphertext behind the client's Finished (a request sent right after it).
        let rest = halley_bio_pending(rbio)
        if rest > 0 {
            var behind = [UInt8](repeating: 0, count: rest)
            guard BIO_read(rbio, &behind, Int32(rest)) == Int32(rest) else { return }
            behind.withUnsafeBytes { r.feed($0) }
        }
        takenOver = summary
        records = r
        // No tickets behind the Finished (none configured): nothing of OpenSSL's to take.
        if halley_bio_pending(wbio) == 0 { releaseOpenSSL() }
    }

    /// The records OpenSSL wrote since `written` (the session tickets), each opened with the
    /// first server application key in order: their count, or nil when one is not that.
    private func ticketRecords(
        _ wbio: OpaquePointer, from written: Int, suite: TLS13Records.Suite, serverSecret: [UInt8]
    ) -> UInt64? {
        var p: UnsafePointer<UInt8>?
        let total = halley_bio_mem_peek(wbio, &p)  // OpenSSL's bytes, read before the BIO changes
        guard total >= written else { return nil }
        if total == written { return 0 }
        guard let b = p, let check = TLS13Records.Direction(suite: suite, secret: serverSecret, encrypt: false)
        else { return nil }
        var seq: UInt64 = 0
        var off = written
        while off < total {
            guard off + 5 <= total, b[off] == TLS13Records.ContentType.applicationData.rawValue else { return nil }
            let body = Int(b[off + 3]) << 8 | Int(b[off + 4])
            guard off + 5 + body <= total, body >= 17 else { return nil }
            var scratch = [UInt8](repeating: 0, count: body - 16)
            let opened = halley_tls13_open(check.aead, check.iv, seq, b + off, body, &scratch)
            OPENSSL_cleanse(&scratch, scratch.count)
            guard opened == body - 16 else { return nil }
            seq += 1
            off += 5 + body
        }
        return seq
    }

    /// Notes a finished handshake (true the first time).
    func checkEstablished(now: Int32) -> Bool {
        guard establishedAt == nil, records != nil || ssl.map({ SSL_is_init_finished($0) == 1 }) == true else {
            return false
        }
        establishedAt = now
        return true
    }

    /// OpenSSL's records of `bytes`, into the write BIO. False after a fatal error.
    private func sslWrite(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let ssl else { return false }
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

    /// Plaintext to send, sealed at the end of `out` after every record made before it (our
    /// records straight into `out`; OpenSSL's through its write BIO). False after a fatal
    /// error: the connection must close, the bytes did not go.
    func encrypt(_ bytes: UnsafeRawBufferPointer, into out: ByteBuffer) -> Bool {
        guard let r = records else {
            guard sslWrite(bytes) else { return false }
            takeOutput(into: out)
            return true
        }
        takeOutput(into: out)
        return r.seal(bytes, into: out)
    }

    var hasOutput: Bool { wbio.map { halley_bio_pending($0) > 0 } == true || records?.hasOutput == true }

    /// Whether plaintext may be waiting inside OpenSSL or the records (a record already read
    /// from the socket).
    var hasBufferedInput: Bool {
        if let r = records { return closeReceived || r.hasBufferedInput }
        guard let ssl, let rbio else { return closeReceived }
        return closeReceived || (!starved && (SSL_pending(ssl) > 0 || halley_bio_pending(rbio) > 0))
    }

    /// Moves the records produced so far to the end of `out`.
    func takeOutput(into out: ByteBuffer) {
        takeBIOOutput(into: out)
        records?.takeOutput(into: out)
    }

    /// What OpenSSL wrote into the write BIO (the handshake, tickets, its alerts).
    private func takeBIOOutput(into out: ByteBuffer) {
        guard let wbio else { return }
        var pending = halley_bio_pending(wbio)
        while pending > 0 {
            out.reserve(pending)
            let n = BIO_read(wbio, out.base + out.writerIndex, Int32(min(pending, Int(Int32.max))))
            if n <= 0 { return }
            out.didWrite(Int(n))
            pending = halley_bio_pending(wbio)
        }
        if records != nil { releaseOpenSSL() }  // it writes nothing more
    }

    /// Sends close_notify (sealed by our records, or by OpenSSL into the write BIO).
    func shutdown() {
        if let r = records {
            r.close()
            return
        }
        guard let ssl else { return }
        ERR_clear_error()
        if SSL_is_init_finished(ssl) == 1 && (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN) == 0 { _ = SSL_shutdown(ssl) }
        ERR_clear_error()
    }

    /// The protocol and cipher agreed (for the debug log).
    var summary: String {
        if records != nil { return takenOver + " (own records)" }
        guard let ssl else { return "?" }
        let v = SSL_get_version(ssl).map { String(cString: $0) } ?? "?"
        let c = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)).map { String(cString: $0) } ?? "?"
        return "\(v) \(c)\(SSL_session_reused(ssl) == 1 ? " (resumed)" : "")"
    }
}
