#if canImport(Glibc)
import Glibc
#endif
import COpenSSL
import HalleyCore
import Testing
@testable import HalleyServer

/// `TLSSession` with its own TLS 1.3 records (`TLS13Records`) against an OpenSSL client, both
/// over memory BIOs: no socket, every byte handed across by the test.
@Suite(.serialized) struct TLS13RecordsTests {
    static let suites = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]
    /// Across the WebSocket frame-length boundaries and TLS's 16 KiB record limit.
    static let sizes = [1, 125, 126, 1_024, 16_383, 16_384, 16_385, 65_535, 65_536, 70_000]

    @Test(arguments: suites) func messagesBothWaysByteForByte(suite: String) throws {
        let p = try Pair(suite: suite)
        try p.handshake()
        #expect(p.server.records != nil)
        #expect(!p.server.holdsOpenSSL)  // freed once the tickets were taken
        #expect(p.server.summary.contains(suite))
        for n in Self.sizes {
            let m = Self.message(n, seed: n)
            try p.clientSends(m)
            #expect(try p.serverReads(n) == m, "client to server, \(n) B")
            try p.serverSends(m)
            #expect(try p.clientReads(n) == m, "server to client, \(n) B")
        }
    }

    /// The handshake and then records arrive one byte at a time, and in pieces of 7 bytes.
    @Test(arguments: [1, 7]) func ciphertextSplitAtEveryOffset(piece: Int) throws {
        let p = try Pair(suite: Self.suites[0])
        p.piece = piece
        try p.handshake()
        #expect(p.server.records != nil)
        for n in [1, 126, 1_024, 17_000] {
            let m = Self.message(n, seed: piece + n)
            try p.clientSends(m)
            #expect(try p.serverReads(n) == m)
        }
    }

    /// Several records fed at once, read through a buffer smaller than one record.
    @Test func recordsMergedAndSmallReads() throws {
        let p = try Pair(suite: Self.suites[1])
        try p.handshake()
        let msgs = [Self.message(300, seed: 1), Self.message(20_000, seed: 2), Self.message(5, seed: 3)]
        for m in msgs { try p.clientWrites(m) }
        p.clientOutput().withUnsafeBytes { p.server.feed($0) }
        var got: [UInt8] = []
        try withUnsafeTemporaryAllocation(byteCount: 100, alignment: 1) { buf in
            while got.count < 20_305 {
                guard case .data(let k) = p.server.decrypt(into: buf) else {
                    throw Failure("no data after \(got.count)")
                }
                got += UnsafeRawBufferPointer(rebasing: buf[0..<k])
            }
        }
        #expect(got == msgs.flatMap { $0 })
        #expect(!p.server.hasBufferedInput)
    }

    /// The client's KeyUpdate, with and without a request for ours: data flows both ways under
    /// the new keys, and ours moved on exactly when the client asked (its next read is under
    /// our new key: a KeyUpdate derived differently from OpenSSL's fails there).
    @Test(arguments: [true, false]) func keyUpdateFromTheClient(requested: Bool) throws {
        let p = try Pair(suite: Self.suites[0])
        try p.handshake()
        for round in 1...3 {
            #expect(SSL_key_update(p.client, requested ? SSL_KEY_UPDATE_REQUESTED : SSL_KEY_UPDATE_NOT_REQUESTED) == 1)
            let m = Self.message(200, seed: round)
            try p.clientSends(m)
            #expect(try p.serverReads(200) == m)
            #expect(p.server.records?.readGeneration == round)
            #expect(p.server.records?.writeGeneration == (requested ? round : 0))
            try p.serverSends(m)
            #expect(try p.clientReads(200) == m)
        }
    }

    /// The session tickets OpenSSL seals at the end of the handshake come before our first
    /// record: 0, 1 and 3 of them (a wrong count reuses a nonce, and the client's read fails).
    @Test(arguments: [0, 1, 3]) func ticketsCountedIntoTheFirstSequenceNumber(tickets: Int) throws {
        let p = try Pair(suite: Self.suites[0], tickets: tickets)
        try p.handshake()
        #expect(p.server.records != nil)
        #expect(!p.server.holdsOpenSSL)
        let m = Self.message(100, seed: tickets)
        try p.serverSends(m)
        #expect(try p.clientReads(100) == m)
    }

    /// A request in the same flight as the client's Finished (read in one piece with it).
    @Test func dataBehindTheFinished() throws {
        let p = try Pair(suite: Self.suites[1])
        let early = Self.message(3_000, seed: 5)
        try p.handshake(thenClientWrites: early)
        #expect(p.server.records != nil)
        #expect(try p.serverReads(3_000) == early)
        try p.serverSends(early)
        #expect(try p.clientReads(3_000) == early)
    }

    /// The client pads its records (to blocks of 256 bytes): the content type is found behind
    /// the zeros.
    @Test func paddedRecords() throws {
        let p = try Pair(suite: Self.suites[2])
        #expect(SSL_set_block_padding(p.client, 256) == 1)
        try p.handshake()
        for n in [1, 255, 256, 1_000, 16_384] {
            let m = Self.message(n, seed: n)
            try p.clientSends(m)
            #expect(try p.serverReads(n) == m)
        }
    }

    /// A client that negotiated max_fragment_length gets OpenSSL's records (ours are up to
    /// 16 KiB).
    @Test func maxFragmentLengthStaysWithOpenSSL() throws {
        let p = try Pair(suite: Self.suites[0], maxFragment: UInt8(TLSEXT_max_fragment_length_1024))
        try p.handshake()
        #expect(p.server.records == nil)
        let m = Self.message(5_000, seed: 1)
        try p.serverSends(m)
        #expect(try p.clientReads(5_000) == m)
        try p.clientSends(m)
        #expect(try p.serverReads(5_000) == m)
    }

    /// Our write key moves on by itself after `rekeyAfter` records.
    @Test func serverRekeysByItself() throws {
        let p = try Pair(suite: Self.suites[2])
        p.server.rekeyAfter = 3
        try p.handshake()
        for i in 0..<10 {
            let m = Self.message(50 + i, seed: i)
            try p.serverSends(m)
            #expect(try p.clientReads(m.count) == m)
        }
        // The first key sealed the tickets and 1 record, each next one 3 records.
        #expect(p.server.records?.writeGeneration == 3)
    }

    @Test func closeNotifyBothWays() throws {
        let p = try Pair(suite: Self.suites[0])
        try p.handshake()
        let m = Self.message(40, seed: 9)
        try p.clientWrites(m)
        #expect(SSL_shutdown(p.client) >= 0)
        p.clientOutput().withUnsafeBytes { p.server.feed($0) }
        #expect(try p.serverReads(40) == m)
        try withUnsafeTemporaryAllocation(byteCount: 64, alignment: 1) { buf in
            guard case .closed = p.server.decrypt(into: buf) else { throw Failure("no close") }
        }
        #expect(p.server.hasBufferedInput)  // the end of the stream is there to read
        p.server.shutdown()
        p.deliverToClient()
        var b = [UInt8](repeating: 0, count: 16)
        #expect(SSL_read(p.client, &b, 16) <= 0)
        #expect(SSL_get_error(p.client, -1) == SSL_ERROR_ZERO_RETURN)
    }

    /// A flipped bit anywhere in a record (header, ciphertext or tag) is refused, and the
    /// client is told why (a fatal bad_record_mac alert).
    @Test func tamperedRecordsAreRefused() throws {
        for at in [2, 5, 20, 40] {
            let p = try Pair(suite: Self.suites[0])
            try p.handshake()
            try p.clientWrites(Self.message(20, seed: at))
            var c = p.clientOutput()
            c[at] ^= 0x01
            c.withUnsafeBytes { p.server.feed($0) }
            try withUnsafeTemporaryAllocation(byteCount: 64, alignment: 1) { buf in
                guard case .failed(let why) = p.server.decrypt(into: buf) else {
                    throw Failure("tampered byte \(at) accepted")
                }
                #expect(why == "bad record MAC")
            }
            #expect(p.server.hasOutput)
            p.deliverToClient()
            var b = [UInt8](repeating: 0, count: 16)
            let k = SSL_read(p.client, &b, 16)
            #expect(k <= 0 && SSL_get_error(p.client, k) == SSL_ERROR_SSL)
            let e = ERR_get_error()
            ERR_clear_error()
            #expect(ERR_GET_REASON(e) == SSL_R_SSLV3_ALERT_BAD_RECORD_MAC)
            // Nothing is sealed after a fatal alert.
            let out = ByteBuffer(capacity: 64)
            #expect(!b.withUnsafeBytes { p.server.encrypt($0, into: out) })
        }
    }

    /// A record longer than TLS allows is refused before its bytes arrive.
    @Test func oversizedRecordIsRefused() throws {
        let p = try Pair(suite: Self.suites[0])
        try p.handshake()
        let header: [UInt8] = [23, 3, 3, 0x41, 0x01]  // 16,641 bytes: 2^14 + 257
        header.withUnsafeBytes { p.server.feed($0) }
        try withUnsafeTemporaryAllocation(byteCount: 64, alignment: 1) { buf in
            guard case .failed(let why) = p.server.decrypt(into: buf) else { throw Failure("accepted") }
            #expect(why.hasPrefix("record overflow"))
        }
    }

    /// TLS 1.2, and TLS 1.3 with `ownRecords` off: OpenSSL's records, as before.
    @Test(arguments: [(TLS1_2_VERSION, true), (TLS1_3_VERSION, false)])
    func opensslRecordsOtherwise(version: Int32, own: Bool) throws {
        let p = try Pair(suite: Self.suites[0], maxVersion: version, ownRecords: own)
        try p.handshake()
        #expect(p.server.records == nil)
        #expect(p.server.holdsOpenSSL)
        for n in [1, 16_385, 70_000] {
            let m = Self.message(n, seed: n)
            try p.clientSends(m)
            #expect(try p.serverReads(n) == m)
            try p.serverSends(m)
            #expect(try p.clientReads(n) == m)
        }
    }

    static func message(_ n: Int, seed: Int) -> [UInt8] {
        (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed &* 7 &+ ($0 >> 8)) }
    }
}

struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// A server `TLSSession` and an OpenSSL client `SSL`, both ends in memory.
final class Pair {
    let server: TLSSession
    let client: OpaquePointer
    let clientCtx: OpaquePointer
    let cin: OpaquePointer  // the client's read BIO (the SSL owns both)
    let cout: OpaquePointer
    /// Bytes per `feed` on the server (0: all at once).
    var piece = 0

    init(
        suite: String, maxVersion: Int32 = TLS1_3_VERSION, ownRecords: Bool = true, tickets: Int? = nil,
        maxFragment: UInt8? = nil
    ) throws {
        let (cert, key) = try Credentials.shared.files()
        let ctx = try TLSContext(certFile: cert, keyFile: key, ownRecords: ownRecords)
        if let t = tickets { _ = SSL_CTX_set_num_tickets(ctx.ctx, t) }
        guard let s = TLSSession(ctx) else { throw Failure("TLSSession") }
        server = s
        guard let cc = SSL_CTX_new(TLS_client_method()) else { throw Failure("SSL_CTX_new") }
        clientCtx = cc
        _ = halley_ssl_ctx_set_proto_range(cc, TLS1_2_VERSION, maxVersion)
        _ = SSL_CTX_set_ciphersuites(cc, suite)
        if let f = maxFragment { _ = SSL_CTX_set_tlsext_max_fragment_length(cc, f) }
        guard let c = SSL_new(cc), let r = TLSSession.memoryBIO(), let w = TLSSession.memoryBIO() else {
            throw Failure("SSL_new")
        }
        SSL_set_bio(c, r, w)
        SSL_set_connect_state(c)
        client = c
        cin = r
        cout = w
    }

    deinit {
        SSL_free(client)
        SSL_CTX_free(clientCtx)
    }

    /// What the client wrote, taken out of its BIO.
    func clientOutput() -> [UInt8] {
        let n = halley_bio_pending(cout)
        var b = [UInt8](repeating: 0, count: n)
        if n > 0 { _ = BIO_read(cout, &b, Int32(n)) }
        return b
    }

    /// Feeds `bytes` to the server (in `piece`-byte pieces, each read at once) and collects
    /// the plaintext that comes out.
    func feedServer(_ bytes: [UInt8], into got: inout [UInt8]) throws {
        let step = piece > 0 ? piece : max(bytes.count, 1)
        var off = 0
        repeat {
            let end = min(off + step, bytes.count)
            bytes[off..<end].withUnsafeBytes { server.feed($0) }
            try drainServer(into: &got)
            off = end
        } while off < bytes.count
    }

    func drainServer(into got: inout [UInt8]) throws {
        try withUnsafeTemporaryAllocation(byteCount: 64 * 1024, alignment: 1) { buf in
            while true {
                switch server.decrypt(into: buf) {
                case .data(let k): got += UnsafeRawBufferPointer(rebasing: buf[0..<k])
                case .needInput: return
                case .closed: return
                case .failed(let why): throw Failure("server: \(why)")
                }
            }
        }
    }

    /// The server's records into the client's read BIO.
    func deliverToClient() {
        let b = ByteBuffer(capacity: 1024)
        server.takeOutput(into: b)
        if b.readableBytes > 0 { _ = BIO_write(cin, b.readable.baseAddress, Int32(b.readableBytes)) }
    }

    /// `thenClientWrites`: sent by the client as soon as its side is done, in the same
    /// flight as its Finished (what the server reads of it waits for `serverReads`).
    func handshake(thenClientWrites early: [UInt8]? = nil) throws {
        var wrote = false
        for _ in 0..<10 {
            let rc = SSL_do_handshake(client)
            if rc == 1 && server.handshakeDone { return }
            if rc != 1 && SSL_get_error(client, rc) != SSL_ERROR_WANT_READ { throw Failure("client handshake failed") }
            if rc == 1, let e = early, !wrote {
                try clientWrites(e)
                wrote = true
            }
            try feedServer(clientOutput(), into: &pending)
            _ = server.checkEstablished(now: 1)
            deliverToClient()
        }
        throw Failure("no handshake after 10 rounds")
    }

    func clientWrites(_ m: [UInt8]) throws {
        guard SSL_write(client, m, Int32(m.count)) == Int32(m.count) else { throw Failure("SSL_write") }
    }

    func clientSends(_ m: [UInt8]) throws {
        try clientWrites(m)
        pending = []
        try feedServer(clientOutput(), into: &pending)
        deliverToClient()  // a KeyUpdate the server owes
    }

    private var pending: [UInt8] = []

    func serverReads(_ n: Int) throws -> [UInt8] {
        try drainServer(into: &pending)
        guard pending.count == n else { throw Failure("server read \(pending.count) of \(n) bytes") }
        defer { pending = [] }
        return pending
    }

    func serverSends(_ m: [UInt8]) throws {
        let out = ByteBuffer(capacity: 1024)
        guard m.withUnsafeBytes({ server.encrypt($0, into: out) }) else { throw Failure("encrypt") }
        server.takeOutput(into: out)
        _ = BIO_write(cin, out.readable.baseAddress, Int32(out.readableBytes))
    }

    func clientReads(_ n: Int) throws -> [UInt8] {
        var got: [UInt8] = []
        var b = [UInt8](repeating: 0, count: 32 * 1024)
        while got.count < n {
            let k = SSL_read(client, &b, Int32(b.count))
            guard k > 0 else {
                throw Failure("client read \(got.count) of \(n) bytes (error \(SSL_get_error(client, k)))")
            }
            got += b[0..<Int(k)]
        }
        // The client's answers (its KeyUpdate after ours was requested: none here) stay put.
        return got
    }
}

/// A self-signed P-256 certificate and key, made once per test run, as PEM files.
final class Credentials: @unchecked Sendable {  // @unchecked: `made` is set once under `lock`
    static let shared = Credentials()
    private let lock = Locked<(String, String)?>(nil)

    func files() throws -> (String, String) {
        try lock.withLock { made throws -> (String, String) in
            if let m = made { return m }
            let m = try Self.make()
            made = m
            return m
        }
    }

    static func make() throws -> (String, String) {
        guard let kctx = EVP_PKEY_CTX_new_from_name(nil, "EC", nil) else { throw Failure("EC") }
        defer { EVP_PKEY_CTX_free(kctx) }
        var pkey: OpaquePointer?
        guard EVP_PKEY_keygen_init(kctx) == 1, EVP_PKEY_CTX_set_group_name(kctx, "P-256") == 1,
            EVP_PKEY_generate(kctx, &pkey) == 1, let key = pkey
        else { throw Failure("keygen") }
        defer { EVP_PKEY_free(key) }
        guard let x = X509_new() else { throw Failure("X509_new") }
        defer { X509_free(x) }
        X509_set_version(x, 2)
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1)
        X509_gmtime_adj(X509_getm_notBefore(x), 0)
        X509_gmtime_adj(X509_getm_notAfter(x), 86_400)
        X509_set_pubkey(x, key)
        let name = X509_get_subject_name(x)
        X509_NAME_add_entry_by_txt(name, "CN", 0x1001 /* MBSTRING_ASC */, "localhost", -1, -1, 0)
        X509_set_issuer_name(x, name)
        guard X509_sign(x, key, EVP_sha256()) > 0 else { throw Failure("X509_sign") }
        let dir = "/tmp/halley-tls13-tests-\(getpid())"
        mkdir(dir, 0o700)
        let cert = dir + "/cert.pem", keyFile = dir + "/key.pem"
        guard let cf = fopen(cert, "w") else { throw Failure("fopen") }
        PEM_write_X509(cf, x)
        fclose(cf)
        guard let kf = fopen(keyFile, "w") else { throw Failure("fopen") }
        PEM_write_PrivateKey(kf, key, nil, nil, 0, nil, nil)
        fclose(kf)
        return (cert, keyFile)
    }
}
