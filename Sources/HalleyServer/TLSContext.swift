#if canImport(Glibc)
import Glibc
#endif
import COpenSSL
import HalleyCore

/// What went wrong loading a certificate and key: said plainly at start-up and on reload.
public struct TLSError: Error, CustomStringConvertible {
    public let description: String
}

/// The server's TLS settings and credentials (an `SSL_CTX`): TLS 1.2 minimum, the server's
/// cipher order (ECDHE with AES-GCM or ChaCha20 for TLS 1.2; TLS 1.3's own suites), ALPN
/// `http/1.1`, no renegotiation, no compression, session resumption by tickets (and a
/// server-side cache for TLS 1.2 session ids).
///
/// `@unchecked Sendable`: configured once in `init`, then only used to create connections
/// (`SSL_new` may be called from several threads on one `SSL_CTX`).
public final class TLSContext: @unchecked Sendable {
    let ctx: OpaquePointer
    public let certFile: String
    public let keyFile: String
    /// TLS 1.3 connections switch to `TLS13Records` after the handshake (the key-log
    /// callback reports their traffic secrets to the session).
    public let ownRecords: Bool

    /// Loads `certFile` (PEM: the certificate, then its chain) and `keyFile` (PEM private key)
    /// and checks that they belong together.
    public init(certFile: String, keyFile: String, ownRecords: Bool = true) throws(TLSError) {
        self.certFile = certFile
        self.keyFile = keyFile
        self.ownRecords = ownRecords
        for (what, path) in [("certificate", certFile), ("key", keyFile)] {
            if access(path, F_OK) != 0 { throw TLSError(description: "TLS \(what) file \(path): not found") }
            if access(path, R_OK) != 0 {
                throw TLSError(description: "TLS \(what) file \(path): not readable (permissions)")
            }
        }
        guard let c = SSL_CTX_new(TLS_server_method()) else {
            throw TLSError(description: "TLS: SSL_CTX_new failed: \(Self.lastError())")
        }
        // Every stored property is set from here on: a throw below runs deinit, which frees
        // the context.
        ctx = c
        ERR_clear_error()
        guard SSL_CTX_use_certificate_chain_file(c, certFile) == 1 else {
            let e = Self.lastError()
            throw TLSError(description: "TLS certificate file \(certFile): not a PEM certificate chain (\(e))")
        }
        halley_ssl_ctx_no_passphrase(c)  // never prompt on the terminal (or block a reload)
        guard SSL_CTX_use_PrivateKey_file(c, keyFile, SSL_FILETYPE_PEM) == 1 else {
            let e = Self.lastError()
            if Self.fileMentions(keyFile, "ENCRYPTED") {
                throw TLSError(
                    description:
                        "TLS key file \(keyFile) is encrypted: give an unencrypted key (openssl pkey -in KEY -out KEY.plain)"
                )
            }
            if e.contains("key values mismatch") {
                throw TLSError(
                    description: "TLS key file \(keyFile) does not match the certificate in \(certFile) (\(e))")
            }
            throw TLSError(description: "TLS key file \(keyFile): not a PEM private key (\(e))")
        }
        guard SSL_CTX_check_private_key(c) == 1 else {
            let e = Self.lastError()
            throw TLSError(description: "TLS key file \(keyFile) does not match the certificate in \(certFile) (\(e))")
        }
        _ = halley_ssl_ctx_set_min_tls12(c)
        _ = halley_ssl_ctx_set_modes(c)
        _ = halley_ssl_ctx_session_cache_server(c)
        _ = SSL_CTX_set_options(c, halley_ssl_server_options())
        // TLS 1.2: forward secrecy and AEAD only, strongest first (TLS 1.3 suites are all fine).
        _ = SSL_CTX_set_cipher_list(
            c,
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
        )
        let sid: [UInt8] = Array("halley".utf8)
        _ = SSL_CTX_set_session_id_context(c, sid, UInt32(sid.count))
        SSL_CTX_set_alpn_select_cb(c, halleyALPNSelect, nil)
        if ownRecords { halley_ssl_ctx_keylog(c) }
    }

    deinit { SSL_CTX_free(ctx) }

    /// Whether the first 64 KiB of `path` contain `text` (PEM headers).
    static func fileMentions(_ path: String, _ text: String) -> Bool {
        guard let f = fopen(path, "r") else { return false }
        defer { fclose(f) }
        var buf = [UInt8](repeating: 0, count: 64 * 1024)
        let n = fread(&buf, 1, buf.count, f)
        let needle = Array(text.utf8)
        guard n >= needle.count else { return false }
        for i in 0...(n - needle.count) where buf[i] == needle[0] && Array(buf[i..<(i + needle.count)]) == needle {
            return true
        }
        return false
    }

    /// The oldest error on OpenSSL's queue, as text (and the queue cleared).
    static func lastError() -> String {
        let code = ERR_get_error()
        ERR_clear_error()
        guard code != 0 else { return "no detail" }
        var buf = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buf, buf.count)
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// ALPN: `http/1.1` when the client offers it; otherwise no protocol is agreed (a client
/// offering only `h2` then fails or falls back by itself).
private func halleyALPNSelect(
    _ ssl: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafePointer<UInt8>?>?,
    _ outLen: UnsafeMutablePointer<UInt8>?, _ input: UnsafePointer<UInt8>?, _ inLen: UInt32,
    _ arg: UnsafeMutableRawPointer?
) -> Int32 {
    guard let input = input, let out = out, let outLen = outLen else { return SSL_TLSEXT_ERR_NOACK }
    var i = 0
    let n = Int(inLen)
    while i < n {
        let len = Int(input[i])
        if len == 8 && i + 1 + len <= n && memcmp(input + i + 1, "http/1.1", 8) == 0 {
            out.pointee = UnsafePointer(input + i + 1)
            outLen.pointee = 8
            return SSL_TLSEXT_ERR_OK
        }
        i += 1 + len
    }
    return SSL_TLSEXT_ERR_NOACK
}
