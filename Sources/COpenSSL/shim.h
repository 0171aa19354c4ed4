#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <openssl/md5.h>

// OpenSSL macros Swift cannot import, as functions.
static inline int halley_ssl_ctx_set_min_tls12(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
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
