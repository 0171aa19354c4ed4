#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <openssl/md5.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <string.h>

// OpenSSL macros Swift cannot import, as functions.
static inline int halley_ssl_ctx_set_min_tls12(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
}
static inline int halley_ssl_ctx_set_proto_range(SSL_CTX *ctx, int min, int max) {
    return (int)(SSL_CTX_set_min_proto_version(ctx, min) && SSL_CTX_set_max_proto_version(ctx, max));
}
static inline long halley_ssl_ctx_set_modes(SSL_CTX *ctx) {
    // Idle connections give their record buffers back.
    return SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
}
static inline long halley_ssl_ctx_session_cache_server(SSL_CTX *ctx) {
    return SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
}
static inline size_t halley_bio_pending(BIO *b) { return BIO_ctrl_pending(b); }
/// Empties this thread's error queue when it holds anything: SSL_get_error needs it empty
/// before an SSL call, and ERR_clear_error resets all of its slots every time (about 800
/// instructions, two or three times per TLS record), where a look costs a fraction of that.
static inline void halley_err_clear(void) {
    if (ERR_peek_error() != 0) ERR_clear_error();
}
static inline int halley_bio_set_mem_eof_return(BIO *b, int v) { return (int)BIO_set_mem_eof_return(b, v); }
static inline uint64_t halley_ssl_server_options(void) {
    return SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION;
}
/// Bytes a memory BIO has allocated (it never shrinks by itself).
static inline size_t halley_bio_mem_capacity(BIO *b) {
    BUF_MEM *m = NULL;
    BIO_get_mem_ptr(b, &m);
    return m ? m->max : 0;
}
/// A pass-phrase callback that has none: an encrypted key fails to load instead of prompting.
static inline int halley_no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf; (void)size; (void)rwflag; (void)u;
    return 0;
}
static inline void halley_ssl_ctx_no_passphrase(SSL_CTX *ctx) {
    SSL_CTX_set_default_passwd_cb(ctx, halley_no_passphrase);
}

// SHA-256, SHA-1 and MD5 with their contexts on the caller's stack (HalleyCrypto's Digest says
// why: EVP allocates, dispatches through a provider and frees a context per digest). OpenSSL 3
// deprecates these low-level functions but keeps them; the pragma confines the deprecation to
// these wrappers, so any other deprecated call still warns.
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wdeprecated-declarations"
static inline void halley_sha256_init(SHA256_CTX *c) { (void)SHA256_Init(c); }
static inline void halley_sha256_update(SHA256_CTX *c, const void *p, size_t n) { (void)SHA256_Update(c, p, n); }
static inline void halley_sha256_final(unsigned char *md, SHA256_CTX *c) { (void)SHA256_Final(md, c); }
static inline void halley_sha1_init(SHA_CTX *c) { (void)SHA1_Init(c); }
static inline void halley_sha1_update(SHA_CTX *c, const void *p, size_t n) { (void)SHA1_Update(c, p, n); }
static inline void halley_sha1_final(unsigned char *md, SHA_CTX *c) { (void)SHA1_Final(md, c); }
static inline void halley_md5_init(MD5_CTX *c) { (void)MD5_Init(c); }
static inline void halley_md5_update(MD5_CTX *c, const void *p, size_t n) { (void)MD5_Update(c, p, n); }
static inline void halley_md5_final(unsigned char *md, MD5_CTX *c) { (void)MD5_Final(md, c); }
#pragma clang diagnostic pop

// TLS 1.3 records after the handshake (HalleyServer's TLS13Records): OpenSSL runs the
// handshake; the traffic secrets it reports through the key-log callback (the only way
// OpenSSL 3.0 gives them out) key our own record layer, which seals and opens records with
// one EVP AEAD context per direction instead of SSL_write/SSL_read and their memory BIOs.

/// Where the key-log callback puts a connection's first application traffic secrets (the
/// SSL's app data points at it; set before the handshake, read once after it).
typedef struct {
    unsigned char client[64];
    unsigned char server[64];
    int clientLen;
    int serverLen;
} halley_tls13_secrets;

static inline int halley_hex_nibble(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/// "LABEL <client random> <secret>" (NSS key-log format): keeps the two application traffic
/// secrets of TLS 1.3, ignores every other line.
static void halley_keylog(const SSL *ssl, const char *line) {
    halley_tls13_secrets *s = (halley_tls13_secrets *)SSL_get_app_data(ssl);
    if (s == NULL) return;
    const char *sp1 = strchr(line, ' ');
    if (sp1 == NULL) return;
    const char *sp2 = strchr(sp1 + 1, ' ');
    if (sp2 == NULL) return;
    size_t labelLen = (size_t)(sp1 - line);
    unsigned char *dst;
    int *len;
    if (labelLen == 23 && memcmp(line, "CLIENT_TRAFFIC_SECRET_0", 23) == 0) {
        dst = s->client;
        len = &s->clientLen;
    } else if (labelLen == 23 && memcmp(line, "SERVER_TRAFFIC_SECRET_0", 23) == 0) {
        dst = s->server;
        len = &s->serverLen;
    } else {
        return;
    }
    const char *h = sp2 + 1;
    int n = 0;
    *len = 0;
    while (h[0] != 0 && h[1] != 0 && n < 64) {
        int hi = halley_hex_nibble(h[0]), lo = halley_hex_nibble(h[1]);
        if (hi < 0 || lo < 0) break;
        dst[n++] = (unsigned char)(hi << 4 | lo);
        h += 2;
    }
    if (h[0] == 0 || h[0] == '\n' || h[0] == '\r') *len = n;  // the whole secret or nothing
}

static inline void halley_ssl_ctx_keylog(SSL_CTX *ctx) { SSL_CTX_set_keylog_callback(ctx, halley_keylog); }
static inline int halley_ssl_set_app_data(SSL *ssl, void *p) { return SSL_set_app_data(ssl, p); }
/// The bytes a memory BIO holds unread, without reading them (valid until it changes).
static inline long halley_bio_mem_peek(BIO *b, const unsigned char **p) {
    char *d = NULL;
    long n = BIO_get_mem_data(b, &d);
    *p = (const unsigned char *)d;
    return n;
}

/// HKDF-Expand-Label(secret, label, "", length) of RFC 8446 section 7.1, for a length no
/// longer than the hash: one HMAC over the HkdfLabel and the counter 1. 1 on success.
static inline int halley_hkdf_expand_label(const char *digest, const unsigned char *secret, size_t secretLen,
                                           const char *label, unsigned char *out, size_t outLen) {
    const EVP_MD *md = EVP_get_digestbyname(digest);
    if (md == NULL || outLen > (size_t)EVP_MD_get_size(md)) return 0;
    size_t labelLen = strlen(label);
    if (labelLen > 200) return 0;
    unsigned char info[2 + 1 + 6 + 200 + 1 + 1];
    size_t i = 0;
    info[i++] = (unsigned char)(outLen >> 8);
    info[i++] = (unsigned char)outLen;
    info[i++] = (unsigned char)(6 + labelLen);
    memcpy(info + i, "tls13 ", 6);
    i += 6;
    memcpy(info + i, label, labelLen);
    i += labelLen;
    info[i++] = 0;  // no context
    info[i++] = 1;  // T(1)
    unsigned char t[EVP_MAX_MD_SIZE];
    unsigned int tLen = 0;
    if (HMAC(md, secret, (int)secretLen, info, i, t, &tLen) == NULL || tLen < outLen) return 0;
    memcpy(out, t, outLen);
    OPENSSL_cleanse(t, sizeof t);
    return 1;
}

/// An AEAD context keyed for one direction (suite: the TLS 1.3 cipher suite's protocol id,
/// 0x1301 AES-128-GCM, 0x1302 AES-256-GCM, 0x1303 ChaCha20-Poly1305); NULL for another.
static inline EVP_CIPHER_CTX *halley_aead_new(int suite, const unsigned char *key, int encrypt) {
    const EVP_CIPHER *c = suite == 0x1301 ? EVP_aes_128_gcm()
                        : suite == 0x1302 ? EVP_aes_256_gcm()
                        : suite == 0x1303 ? EVP_chacha20_poly1305() : NULL;
    if (c == NULL) return NULL;
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    if (x == NULL) return NULL;
    if (EVP_CipherInit_ex2(x, c, key, NULL, encrypt, NULL) != 1) {
        EVP_CIPHER_CTX_free(x);
        return NULL;
    }
    return x;
}

static inline void halley_tls13_nonce(unsigned char nonce[12], const unsigned char iv[12], uint64_t seq) {
    memcpy(nonce, iv, 12);
    for (int i = 0; i < 8; i++) nonce[4 + i] ^= (unsigned char)(seq >> (56 - 8 * i));
}

/// Seals one record at `out`: the header (application_data, 0x0303, length), then `in`
/// (n bytes, at most 2^14) and the inner content type encrypted, then the tag. `out` has room
/// for n + 22 bytes and does not overlap `in`. Returns the record's length, or -1.
static inline long halley_tls13_seal(EVP_CIPHER_CTX *c, const unsigned char iv[12], uint64_t seq,
                                     unsigned char type, const unsigned char *in, size_t n, unsigned char *out) {
    unsigned char nonce[12];
    halley_tls13_nonce(nonce, iv, seq);
    size_t body = n + 1 + 16;
    out[0] = 23;
    out[1] = 3;
    out[2] = 3;
    out[3] = (unsigned char)(body >> 8);
    out[4] = (unsigned char)body;
    int l = 0;
    size_t w = 0;
    if (EVP_EncryptInit_ex2(c, NULL, NULL, nonce, NULL) != 1) return -1;
    if (EVP_EncryptUpdate(c, NULL, &l, out, 5) != 1) return -1;
    if (n > 0) {
        if (EVP_EncryptUpdate(c, out + 5, &l, in, (int)n) != 1) return -1;
        w += (size_t)l;
    }
    if (EVP_EncryptUpdate(c, out + 5 + w, &l, &type, 1) != 1) return -1;
    w += (size_t)l;
    if (EVP_EncryptFinal_ex(c, out + 5 + w, &l) != 1) return -1;
    w += (size_t)l;
    if (w != n + 1) return -1;
    OSSL_PARAM p[2] = {OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, out + 5 + w, 16),
                       OSSL_PARAM_construct_end()};
    if (EVP_CIPHER_CTX_get_params(c, p) != 1) return -1;
    return (long)(5 + body);
}

/// Opens one record: `rec` is its header (5 bytes) and body (bodyLen, at least 17 bytes).
/// The inner plaintext (content, type, padding: bodyLen - 16 bytes) goes to `out`, which may
/// be rec + 5 (in place). Returns its length, or -1 when the record is not authentic.
static inline long halley_tls13_open(EVP_CIPHER_CTX *c, const unsigned char iv[12], uint64_t seq,
                                     const unsigned char *rec, size_t bodyLen, unsigned char *out) {
    if (bodyLen < 17) return -1;
    unsigned char nonce[12];
    halley_tls13_nonce(nonce, iv, seq);
    size_t n = bodyLen - 16;
    int l = 0, l2 = 0;
    if (EVP_DecryptInit_ex2(c, NULL, NULL, nonce, NULL) != 1) return -1;
    if (EVP_DecryptUpdate(c, NULL, &l, rec, 5) != 1) return -1;
    OSSL_PARAM p[2] = {OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, (void *)(rec + 5 + n), 16),
                       OSSL_PARAM_construct_end()};
    // Unauthenticated plaintext is wiped from `out` on every failure from here on.
    if (EVP_DecryptUpdate(c, out, &l, rec + 5, (int)n) != 1) goto wipe;
    if (EVP_CIPHER_CTX_set_params(c, p) != 1) goto wipe;
    if (EVP_DecryptFinal_ex(c, out + l, &l2) != 1) goto wipe;
    if ((size_t)(l + l2) != n) goto wipe;
    return (long)n;
wipe:
    OPENSSL_cleanse(out, n);
    return -1;
}
