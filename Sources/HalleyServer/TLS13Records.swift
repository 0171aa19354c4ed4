#if canImport(Glibc)
import Glibc
#endif
import COpenSSL
import HalleyCore

/// TLS 1.3's record layer after the handshake (RFC 8446 §5), for the AEAD suites
/// (`TLS_AES_128_GCM_SHA256`, `TLS_AES_256_GCM_SHA384`, `TLS_CHACHA20_POLY1305_SHA256`):
/// ciphertext in, plaintext out; plaintext in, records out. No I/O: `TLSSession` feeds it
/// what the socket read and writes what it seals.
///
/// OpenSSL runs the handshake and hands over the two application traffic secrets; from then
/// on a record costs one EVP AEAD call sequence per direction. Through `SSL_read` and
/// `SSL_write` (and their memory BIOs) a 32-byte WebSocket echo cost about 17,000
/// instructions in libssl and libcrypto (issue 16).
///
/// What arrives besides application data: `close_notify` (the end of the stream), a
/// `KeyUpdate` (the read key moves on; when the peer asks, ours does too, announced first),
/// `user_canceled` (ignored). Anything else is fatal: another alert, another handshake
/// message, a record that does not authenticate, an oversized one, an empty inner plaintext.
/// Our write key moves on by itself every `rekeyAfter` records (AES-GCM's safety margin,
/// §5.5). Loop-confined, like its session.
final class TLS13Records {
    /// The cipher suite and its hash (the key schedule's).
    struct Suite {
        let id: Int32
        let digest: String
        let keyLength: Int

        init?(protocolID: Int32) {
            switch protocolID {
            case 0x1301: (digest, keyLength) = ("SHA256", 16)
            case 0x1302: (digest, keyLength) = ("SHA384", 32)
            case 0x1303: (digest, keyLength) = ("SHA256", 32)
            default: return nil
            }
            id = protocolID
        }

        var hashLength: Int { digest == "SHA384" ? 48 : 32 }
    }

    /// One direction's key: its traffic secret (for the next KeyUpdate), AEAD context, IV
    /// and sequence number.
    final class Direction {
        var secret: [UInt8]
        // The AEAD context is OpenSSL's; freed in deinit, used only through this object.
        let aead: OpaquePointer
        /// The 12-byte IV, allocated with the direction (the C calls read it by pointer).
        let iv: UnsafeMutablePointer<UInt8>
        var seq: UInt64 = 0

        init?(suite: Suite, secret: [UInt8], encrypt: Bool) {
            var key = [UInt8](repeating: 0, count: suite.keyLength)
            defer { OPENSSL_cleanse(&key, key.count) }
            let iv = UnsafeMutablePointer<UInt8>.allocate(capacity: 12)
            guard
                halley_hkdf_expand_label(suite.digest, secret, secret.count, "key", &key, key.count) == 1,
                halley_hkdf_expand_label(suite.digest, secret, secret.count, "iv", iv, 12) == 1,
                let a = halley_aead_new(suite.id, key, encrypt ? 1 : 0)
            else {
                iv.deallocate()
                return nil
            }
            self.secret = secret
            self.iv = iv
            aead = a
        }

        /// The next generation's secret (`application_traffic_secret_N+1`, §7.2).
        static func nextSecret(_ suite: Suite, _ secret: [UInt8]) -> [UInt8]? {
            var next = [UInt8](repeating: 0, count: suite.hashLength)
            guard halley_hkdf_expand_label(suite.digest, secret, secret.count, "traffic upd", &next, next.count) == 1
            else { return nil }
            return next
        }

        deinit {
            EVP_CIPHER_CTX_free(aead)
            OPENSSL_cleanse(&secret, secret.count)
            OPENSSL_cleanse(iv, 12)
            iv.deallocate()
        }
    }

    enum ContentType: UInt8 {
        case alert = 21
        case handshake = 22
        case applicationData = 23
    }

    static let maxPlaintext = 1 << 14
    /// The largest record body (ciphertext) a peer may send (§5.2).
    static let maxBody = (1 << 14) + 256
    /// Records sealed under one key before ours moves on by itself (default 2^24: below
    /// AES-GCM's 2^24.5 full-size records of §5.5).
    let rekeyAfter: UInt64

    let suite: Suite
    private var read: Direction
    private var write: Direction
    /// Ciphertext not yet opened (a partial record, or records behind one handed over).
    private var input = ByteBuffer(capacity: 0)
    /// Plaintext of a record opened in place that the caller had no room for: still in
    /// `input`, as offsets from its read index (which stays at the record's start until the
    /// plaintext is handed over; `feed` only appends, so the offsets hold).
    private var plain: (from: Int, count: Int, record: Int)?
    /// Records sealed here, not yet taken (a KeyUpdate, an alert): records leave in the
    /// order they were sealed, so a caller's buffer takes these first (`TLSSession.encrypt`).
    private(set) var output: ByteBuffer?
    /// Handshake bytes of a message that spans records.
    private var handshake: [UInt8] = []
    /// The peer asked for our KeyUpdate: sent before our next record.
    private var keyUpdateOwed = false
    private(set) var closeReceived = false
    private var closeSent = false
    /// Key updates so far, per direction (what tests and the debug log look at).
    private(set) var readGeneration = 0
    private(set) var writeGeneration = 0

    /// `writeSeq`: records OpenSSL already sealed with the server's first application key
    /// (the session tickets it sent at the end of the handshake).
    init?(suite: Suite, clientSecret: [UInt8], serverSecret: [UInt8], writeSeq: UInt64, rekeyAfter: UInt64 = 1 << 24) {
        guard clientSecret.count == suite.hashLength, serverSecret.count == suite.hashLength,
            let r = Direction(suite: suite, secret: clientSecret, encrypt: false),
            let w = Direction(suite: suite, secret: serverSecret, encrypt: true)
        else { return nil }
        self.suite = suite
        self.rekeyAfter = rekeyAfter
        read = r
        write = w
        write.seq = writeSeq
    }

    enum Opened: Equatable {
        case data(Int)
        /// No complete record: feed more ciphertext.
        case needInput
        /// The peer's close_notify.
        case closed
        case failed(String)
    }

    /// Ciphertext as it came from the socket.
    func feed(_ bytes: UnsafeRawBufferPointer) {
        input.append(bytes)
    }

    /// Whether plaintext or a complete record waits (nothing to read from the socket first).
    var hasBufferedInput: Bool {
        if closeReceived || plain != nil { return true }
        let b = input.readable
        return b.count >= 5 && b.count >= 5 + (Int(b[3]) << 8 | Int(b[4]))
    }

    /// Plaintext into `buf`: what an earlier record left, or the next records opened until
    /// one carries application data.
    func open(into buf: UnsafeMutableRawBufferPointer) -> Opened {
        if let p = plain {
            let n = min(buf.count, p.count)
            buf.baseAddress!.copyMemory(from: input.base + input.readerIndex + p.from, byteCount: n)
            if n == p.count {
                input.moveReader(by: p.record)
                plain = nil
            } else {
                plain = (p.from + n, p.count - n, p.record)
            }
            return .data(n)
        }
        while true {
            if closeReceived { return .closed }
            let avail = input.readableBytes
            guard avail >= 5 else { return .needInput }
            let rec = (input.base + input.readerIndex).assumingMemoryBound(to: UInt8.self)
            guard rec[0] == ContentType.applicationData.rawValue else {
                return fail("unexpected record type \(rec[0])", alert: 10)
            }
            let body = Int(rec[3]) << 8 | Int(rec[4])
            guard body <= Self.maxBody else { return fail("record overflow (\(body) bytes)", alert: 22) }
            guard avail >= 5 + body else { return .needInput }
            guard body >= 17 else { return fail("record too short to be authentic", alert: 50) }
            // Into the caller's buffer when the record fits, else in place.
            let inner = body - 16
            let direct = buf.count >= inner
            let out = direct ? buf.baseAddress!.assumingMemoryBound(to: UInt8.self) : rec + 5
            guard halley_tls13_open(read.aead, read.iv, read.seq, rec, body, out) == inner else {
                return fail("bad record MAC", alert: 20)
            }
            read.seq += 1
            // The content type is the last byte that is not zero padding.
            var end = inner
            while end > 0 && out[end - 1] == 0 { end -= 1 }
            guard end > 0 else { return fail("inner plaintext without a content type", alert: 10) }
            let type = out[end - 1]
            let content = end - 1
            guard content <= Self.maxPlaintext else { return fail("record overflow (\(content) bytes)", alert: 22) }
            if type == ContentType.applicationData.rawValue {
                guard handshake.isEmpty else { return fail("data inside a handshake message", alert: 10) }
                if content == 0 {
                    input.moveReader(by: 5 + body)
                    continue
                }
                if direct {
                    input.moveReader(by: 5 + body)
                    return .data(content)
                }
                plain = (5, content, 5 + body)
                return open(into: buf)
            }
            let copy = Array(UnsafeBufferPointer(start: out, count: content))
            input.moveReader(by: 5 + body)
            switch type {
            case ContentType.alert.rawValue:
                guard handshake.isEmpty, !copy.isEmpty else { return fail("empty alert record", alert: 10) }
                guard copy.count == 2 else { return fail("malformed alert", alert: 50) }
                if copy[1] == 0 {  // close_notify
                    closeReceived = true
                    return .closed
                }
                if copy[1] == 90 { continue }  // user_canceled: a close_notify follows
                closeSent = true  // no alert answers a fatal one
                return .failed("alert \(copy[1]) from the peer")
            case ContentType.handshake.rawValue:
                if let (why, alert) = handshakeBytes(copy) { return fail(why, alert: alert) }
            default:
                return fail("unexpected inner content type \(type)", alert: 10)
            }
        }
    }

    /// A fatal error: our alert (RFC 8446 §6.2) goes into `output` to tell the peer why,
    /// and nothing is sealed after it.
    private func fail(_ why: String, alert: UInt8) -> Opened {
        if !closeSent {
            let a: [UInt8] = [2, alert]
            _ = a.withUnsafeBytes { sealRecord(.alert, $0, into: outputBuffer()) }
            closeSent = true
        }
        return .failed(why)
    }

    /// Handshake messages after the handshake: only KeyUpdate, at the end of its record.
    /// Why not, with the alert that says so; nil when the bytes were taken.
    private func handshakeBytes(_ bytes: [UInt8]) -> (String, UInt8)? {
        guard !bytes.isEmpty else { return ("empty handshake record", 10) }
        handshake += bytes
        while handshake.count >= 4 {
            let len = Int(handshake[1]) << 16 | Int(handshake[2]) << 8 | Int(handshake[3])
            guard handshake[0] == 24 else {
                return ("unexpected handshake message \(handshake[0]) after the handshake", 10)
            }
            guard len == 1 else { return ("malformed KeyUpdate", 50) }
            guard handshake.count >= 5 else { return nil }
            let request = handshake[4]
            guard request <= 1 else { return ("KeyUpdate with request_update \(request)", 47) }
            // The next record uses the new key: a KeyUpdate must end its record.
            guard handshake.count == 5 else { return ("KeyUpdate not at the end of its record", 10) }
            handshake = []
            guard let s = Direction.nextSecret(suite, read.secret),
                let r = Direction(suite: suite, secret: s, encrypt: false)
            else { return ("key update failed", 80) }
            read = r
            readGeneration += 1
            if request == 1 { keyUpdateOwed = true }
        }
        return nil
    }

    /// Seals `bytes` as application data records at the end of `out` (records owed before
    /// them first). False when sealing failed: the connection must close.
    func seal(_ bytes: UnsafeRawBufferPointer, into out: ByteBuffer) -> Bool {
        guard !closeSent else { return false }
        if keyUpdateOwed {
            keyUpdateOwed = false
            guard sendKeyUpdate(into: out) else { return false }
        }
        var off = 0
        while off < bytes.count {
            let n = min(bytes.count - off, Self.maxPlaintext)
            guard sealRecord(.applicationData, UnsafeRawBufferPointer(rebasing: bytes[off..<(off + n)]), into: out)
            else { return false }
            off += n
        }
        return true
    }

    /// Seals one record of `type`, moving the write key on first when it has sealed enough.
    private func sealRecord(_ type: ContentType, _ bytes: UnsafeRawBufferPointer, into out: ByteBuffer) -> Bool {
        if write.seq >= rekeyAfter && type != .handshake {
            guard sendKeyUpdate(into: out) else { return false }
        }
        out.reserve(bytes.count + 22)
        let dst = (out.base + out.writerIndex).assumingMemoryBound(to: UInt8.self)
        let src = bytes.baseAddress.map { $0.assumingMemoryBound(to: UInt8.self) }
        let n = halley_tls13_seal(write.aead, write.iv, write.seq, type.rawValue, src, bytes.count, dst)
        guard n == bytes.count + 22 else { return false }
        out.didWrite(n)
        write.seq += 1
        return true
    }

    /// Our KeyUpdate (update_not_requested), sealed under the current key; then the next key.
    private func sendKeyUpdate(into out: ByteBuffer) -> Bool {
        let msg: [UInt8] = [24, 0, 0, 1, 0]
        guard msg.withUnsafeBytes({ sealRecord(.handshake, $0, into: out) }),
            let s = Direction.nextSecret(suite, write.secret), let w = Direction(suite: suite, secret: s, encrypt: true)
        else { return false }
        write = w
        writeGeneration += 1
        return true
    }

    /// Our close_notify (once), into `output`.
    func close() {
        guard !closeSent else { return }
        let alert: [UInt8] = [1, 0]
        _ = alert.withUnsafeBytes { sealRecord(.alert, $0, into: outputBuffer()) }
        closeSent = true
    }

    /// The KeyUpdate the peer asked for, into `output` now (not with our next data).
    func sealOwed() -> Bool {
        guard keyUpdateOwed, !closeSent else { return true }
        keyUpdateOwed = false
        return sendKeyUpdate(into: outputBuffer())
    }

    private func outputBuffer() -> ByteBuffer {
        if let o = output { return o }
        let o = ByteBuffer(capacity: 256)
        output = o
        return o
    }

    var hasOutput: Bool { !(output?.isEmpty ?? true) }

    /// Moves `output` to the end of `out`.
    func takeOutput(into out: ByteBuffer) {
        guard let o = output else { return }
        out.append(o.readable)
        output = nil
    }

    /// Gives back a large input buffer when nothing waits in it.
    func shrinkIfIdle() {
        if input.isEmpty && input.capacity > 16 * 1024 { input = ByteBuffer(capacity: 0) }
    }

}
