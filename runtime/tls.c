/* TLS as a property of a connection (SPEC §9), on OpenSSL 3.
 *
 * OpenSSL never touches the socket: each TLS connection's SSL object reads
 * ciphertext from one memory BIO and writes ciphertext to another, and the
 * connection's ordinary libuv reads and writes move the bytes. So there is
 * no second event loop and no blocking I/O inside OpenSSL:
 *
 *   socket --read_cb--> rbio --SSL_read--> c->rbuf (plaintext, matched as
 *                                           for any connection)
 *   send --SSL_write--> wbio --cs__conn_write_raw--> socket
 *
 * The handshake is driven the same way: every time ciphertext arrives it is
 * fed in and SSL_do_handshake runs until it wants more; the waiting
 * coroutine parks as a reader does (CS_READ_HANDSHAKE) and is woken when the
 * handshake is done or has failed. Whatever OpenSSL wants to send (handshake
 * messages, session tickets, alerts, close_notify) is written out after
 * each step. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "internal.h"

/* A client context remembers the last session of each of up to
 * TLS_SESSIONS peers, so that a new connection to one resumes it (one
 * round trip less, no certificate chain to check), as nginx's upstream
 * connections do. A session is keyed by the peer's address, the name sent
 * and checked, and whether it was checked: one verified for a name never
 * serves another, and an unverified one never serves a verified one. The
 * least recently used entry makes room. */
#define TLS_SESSIONS 32

typedef struct {
  char *key;             /* NULL: a free entry */
  SSL_SESSION *sess;
  uint64_t used;
} tls_session_t;

struct cs_tls_s {
  SSL *ssl;              /* owns both BIOs */
  BIO *rbio, *wbio;
  cs_tls_ctx_t *owner;   /* a client's context, which outlives it (coserve.lua
                          * keeps client contexts for the process's life) */
  char *key;             /* a client's session key, or NULL */
  unsigned done : 1;     /* the handshake has completed */
  unsigned shut : 1;     /* close_notify has been queued */
  char err[240];         /* why it failed: "tls: ..." */
};

/* ---- contexts ---- */

struct cs_tls_ctx_s {
  SSL_CTX *ctx;
  int is_server;
  unsigned char *alpn;   /* wire format: length-prefixed names */
  size_t alpn_len;
  int nsni;
  struct {
    char *name;
    SSL_CTX *ctx;
  } *sni;
  tls_session_t sessions[TLS_SESSIONS]; /* a client's */
  uint64_t session_clock;
};

/* "tls: " and OpenSSL's reason for the error on top of its queue (or
 * `what`), then the queue is cleared: it is per thread and must not leak
 * into another connection's report. */
static void tls_error(char *buf, size_t size, const char *what) {
  unsigned long e = ERR_peek_last_error();
  const char *reason = e ? ERR_reason_error_string(e) : NULL;
  if (what && reason)
    snprintf(buf, size, "tls: %s: %s", what, reason);
  else
    snprintf(buf, size, "tls: %s", what ? what : reason ? reason : "error");
  ERR_clear_error();
}

static int ctx_protocols(SSL_CTX *ctx, const cs_tls_config_t *cfg, char *err, size_t size) {
  static const struct {
    const char *name;
    int version;
  } versions[] = {{"TLSv1.2", TLS1_2_VERSION}, {"TLSv1.3", TLS1_3_VERSION}};
  int lo = 0, hi = 0;
  for (int i = 0; i < cfg->nprotocols; i++) {
    int v = 0;
    for (size_t k = 0; k < sizeof versions / sizeof versions[0]; k++)
      if (strcmp(cfg->protocols[i], versions[k].name) == 0)
        v = versions[k].version;
    if (v == 0) {
      snprintf(err, size, "tls: unknown protocol '%s' (TLSv1.2 or TLSv1.3)", cfg->protocols[i]);
      return -1;
    }
    lo = lo == 0 || v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  SSL_CTX_set_min_proto_version(ctx, lo ? lo : TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, hi);
  return 0;
}

static int ctx_load_pair(SSL_CTX *ctx, const char *cert, const char *key, char *err,
                         size_t size) {
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
    tls_error(err, size, NULL);
    char why[200];
    snprintf(why, sizeof why, "%s", err + 5);
    snprintf(err, size, "tls: cannot use certificate %s: %s", cert, why);
    return -1;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
    tls_error(err, size, NULL);
    char why[200];
    snprintf(why, sizeof why, "%s", err + 5);
    snprintf(err, size, "tls: cannot use key %s: %s", key, why);
    return -1;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    snprintf(err, size, "tls: key %s does not match certificate %s", key, cert);
    return -1;
  }
  return 0;
}

/* The server's ALPN choice: its own first preference the client offers. */
static int ctx_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                           const unsigned char *in, unsigned int inlen, void *arg) {
  cs_tls_ctx_t *t = arg;
  (void)ssl;
  unsigned char *sel;
  if (SSL_select_next_proto(&sel, outlen, t->alpn, (unsigned)t->alpn_len, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

/* SNI: a name the server has its own certificate for switches context. */
static int ctx_servername(SSL *ssl, int *alert, void *arg) {
  cs_tls_ctx_t *t = arg;
  (void)alert;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == NULL)
    return SSL_TLSEXT_ERR_NOACK;
  for (int i = 0; i < t->nsni; i++) {
    if (strcasecmp(t->sni[i].name, name) == 0) {
      SSL_set_SSL_CTX(ssl, t->sni[i].ctx);
      /* SSL_set_SSL_CTX does not carry the verify mode over. */
      SSL_set_verify(ssl, SSL_CTX_get_verify_mode(SSL_get_SSL_CTX(ssl)), NULL);
      return SSL_TLSEXT_ERR_OK;
    }
  }
  return SSL_TLSEXT_ERR_OK; /* the default certificate answers */
}

static SSL_CTX *ctx_base(const cs_tls_config_t *cfg, char *err, size_t size) {
  SSL_CTX *ctx = SSL_CTX_new(cfg->is_server ? TLS_server_method() : TLS_client_method());
  if (ctx == NULL) {
    tls_error(err, size, "cannot create a context");
    return NULL;
  }
  /* Idle connections hold no read/write buffers; renegotiation is refused
   * (a client could make the server redo the expensive part at will). */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (ctx_protocols(ctx, cfg, err, size) != 0)
    goto fail;
  if (cfg->ciphers && SSL_CTX_set_cipher_list(ctx, cfg->ciphers) != 1 &&
      SSL_CTX_set_ciphersuites(ctx, cfg->ciphers) != 1) {
    ERR_clear_error();
    snprintf(err, size, "tls: no usable cipher in '%s'", cfg->ciphers);
    goto fail;
  }
  if (cfg->cert && ctx_load_pair(ctx, cfg->cert, cfg->key ? cfg->key : cfg->cert, err, size))
    goto fail;
  if (cfg->ca) {
    if (SSL_CTX_load_verify_locations(ctx, cfg->ca, NULL) != 1) {
      ERR_clear_error();
      snprintf(err, size, "tls: cannot read CA file %s", cfg->ca);
      goto fail;
    }
    if (cfg->is_server) {
      STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->ca);
      if (names)
        SSL_CTX_set_client_CA_list(ctx, names);
    }
  } else if (!cfg->is_server && SSL_CTX_set_default_verify_paths(ctx) != 1) {
    tls_error(err, size, "cannot load the system's CA certificates");
    goto fail;
  }
  int mode = SSL_VERIFY_NONE;
  if (cfg->verify == CS_TLS_VERIFY_OPTIONAL)
    mode = SSL_VERIFY_PEER;
  else if (cfg->verify == CS_TLS_VERIFY_REQUIRED)
    mode = SSL_VERIFY_PEER | (cfg->is_server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
  SSL_CTX_set_verify(ctx, mode, NULL);
  /* With verify on, OpenSSL answers a client that resumes a session (a
   * TLS 1.2 session or ticket, a TLS 1.3 PSK) with a fatal alert unless
   * the server has a session id context. (Tickets are sealed with keys of
   * this context's own: a session does not resume on another server.) */
  static const unsigned char sid_ctx[] = "coserve";
  if (cfg->is_server && SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1) != 1) {
    tls_error(err, size, "cannot set the session id context");
    goto fail;
  }
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

/* ---- a client's sessions ---- */

static tls_session_t *session_find(cs_tls_ctx_t *t, const char *key) {
  for (int i = 0; i < TLS_SESSIONS; i++)
    if (t->sessions[i].key && strcmp(t->sessions[i].key, key) == 0)
      return &t->sessions[i];
  return NULL;
}

/* OpenSSL's word that a session (a TLS 1.3 ticket comes after the
 * handshake, in the first read) can be resumed later. Returning 1 keeps
 * the reference it gives. */
static int session_new_cb(SSL *ssl, SSL_SESSION *sess) {
  cs_tls_t *tls = SSL_get_app_data(ssl);
  if (tls == NULL || tls->key == NULL || !SSL_SESSION_is_resumable(sess))
    return 0;
  cs_tls_ctx_t *t = tls->owner;
  tls_session_t *e = session_find(t, tls->key);
  if (e == NULL) {
    e = &t->sessions[0];
    for (int i = 1; i < TLS_SESSIONS && e->key; i++)
      if (t->sessions[i].key == NULL || t->sessions[i].used < e->used)
        e = &t->sessions[i];
    char *key = strdup(tls->key);
    if (key == NULL)
      return 0;
    free(e->key);
    e->key = key;
  }
  if (e->sess)
    SSL_SESSION_free(e->sess);
  e->sess = sess;
  e->used = ++t->session_clock;
  return 1;
}

void cs__tls_ctx_free(cs_tls_ctx_t *t) {
  if (t == NULL)
    return;
  for (int i = 0; i < TLS_SESSIONS; i++) {
    free(t->sessions[i].key);
    if (t->sessions[i].sess)
      SSL_SESSION_free(t->sessions[i].sess);
  }
  for (int i = 0; i < t->nsni; i++) {
    free(t->sni[i].name);
    SSL_CTX_free(t->sni[i].ctx);
  }
  free(t->sni);
  free(t->alpn);
  SSL_CTX_free(t->ctx);
  free(t);
}

cs_tls_ctx_t *cs__tls_ctx_new(const cs_tls_config_t *cfg, char *err, size_t size) {
  cs_tls_ctx_t *t = calloc(1, sizeof *t);
  if (t == NULL) {
    snprintf(err, size, "tls: out of memory");
    return NULL;
  }
  t->is_server = cfg->is_server;
  if (cfg->is_server && cfg->cert == NULL) {
    snprintf(err, size, "tls: a server needs cert and key");
    goto fail;
  }
  if ((t->ctx = ctx_base(cfg, err, size)) == NULL)
    goto fail;
  if (cfg->nalpn > 0) {
    size_t len = 0;
    for (int i = 0; i < cfg->nalpn; i++) {
      size_t n = strlen(cfg->alpn[i]);
      if (n == 0 || n > 255) {
        snprintf(err, size, "tls: bad ALPN protocol name '%s'", cfg->alpn[i]);
        goto fail;
      }
      len += n + 1;
    }
    if ((t->alpn = malloc(len)) == NULL)
      goto fail;
    unsigned char *p = t->alpn;
    for (int i = 0; i < cfg->nalpn; i++) {
      size_t n = strlen(cfg->alpn[i]);
      *p++ = (unsigned char)n;
      memcpy(p, cfg->alpn[i], n);
      p += n;
    }
    t->alpn_len = len;
    if (cfg->is_server)
      SSL_CTX_set_alpn_select_cb(t->ctx, ctx_alpn_select, t);
    else
      SSL_CTX_set_alpn_protos(t->ctx, t->alpn, (unsigned)len);
  }
  if (cfg->nsni > 0) {
    if ((t->sni = calloc((size_t)cfg->nsni, sizeof *t->sni)) == NULL)
      goto fail;
    for (int i = 0; i < cfg->nsni; i++) {
      cs_tls_config_t one = *cfg;
      one.cert = cfg->sni[i].cert;
      one.key = cfg->sni[i].key;
      one.nsni = 0;
      t->sni[i].name = strdup(cfg->sni[i].name);
      t->nsni = i + 1;
      if (t->sni[i].name == NULL || (t->sni[i].ctx = ctx_base(&one, err, size)) == NULL)
        goto fail;
      if (t->alpn)
        SSL_CTX_set_alpn_select_cb(t->sni[i].ctx, ctx_alpn_select, t);
    }
    SSL_CTX_set_tlsext_servername_callback(t->ctx, ctx_servername);
    SSL_CTX_set_tlsext_servername_arg(t->ctx, t);
  }
  if (!cfg->is_server) {
    SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(t->ctx, session_new_cb);
  }
  return t;
fail:
  if (err[0] == '\0')
    snprintf(err, size, "tls: out of memory");
  cs__tls_ctx_free(t);
  return NULL;
}

/* ---- connections ---- */

void cs__tls_free(cs_conn_t *c) {
  if (c->tls == NULL)
    return;
  SSL_free(c->tls->ssl);
  free(c->tls->key);
  free(c->tls);
  c->tls = NULL;
}

/* A client connection's session key ("verify name [address]:port"), and
 * the session to resume from it, if t has one. Without a key (a Unix
 * socket, no memory) the connection does a full handshake each time. */
static void session_attach(cs_conn_t *c, cs_tls_t *tls, cs_tls_ctx_t *t, const char *name,
                           int verify) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  char host[64];
  if (c->type != CS_CONN_TCP || uv_tcp_getpeername(&c->u.tcp, (struct sockaddr *)&ss, &len) != 0)
    return;
  int port = cs__addr_name((struct sockaddr *)&ss, host, sizeof host);
  if (port < 0)
    return;
  size_t n = strlen(host) + (name ? strlen(name) : 0) + 16;
  if ((tls->key = malloc(n)) == NULL)
    return;
  snprintf(tls->key, n, "%d %s [%s]:%d", verify != 0, name ? name : "", host, port);
  tls->owner = t;
  SSL_set_app_data(tls->ssl, tls);
  tls_session_t *e = session_find(t, tls->key);
  if (e && e->sess) {
    SSL_set_session(tls->ssl, e->sess);
    e->used = ++t->session_clock;
  }
}

int cs__tls_attach(cs_conn_t *c, cs_tls_ctx_t *t, const char *name, int verify) {
  cs_tls_t *tls = calloc(1, sizeof *tls);
  if (tls == NULL)
    return UV_ENOMEM;
  tls->ssl = SSL_new(t->ctx);
  tls->rbio = BIO_new(BIO_s_mem());
  tls->wbio = BIO_new(BIO_s_mem());
  if (tls->ssl == NULL || tls->rbio == NULL || tls->wbio == NULL) {
    BIO_free(tls->rbio);
    BIO_free(tls->wbio);
    SSL_free(tls->ssl);
    free(tls);
    ERR_clear_error();
    return UV_ENOMEM;
  }
  /* An empty read BIO means "no more yet", not end of file. */
  BIO_set_mem_eof_return(tls->rbio, -1);
  SSL_set_bio(tls->ssl, tls->rbio, tls->wbio);
  if (t->is_server) {
    SSL_set_accept_state(tls->ssl);
  } else {
    SSL_set_connect_state(tls->ssl);
    if (name && *name) {
      unsigned char ip[16];
      int literal = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
      if (!literal)
        SSL_set_tlsext_host_name(tls->ssl, name);
      if (verify) {
        X509_VERIFY_PARAM *param = SSL_get0_param(tls->ssl);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (literal)
          X509_VERIFY_PARAM_set1_ip_asc(param, name);
        else
          X509_VERIFY_PARAM_set1_host(param, name, 0);
      }
    }
    SSL_set_verify(tls->ssl, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    session_attach(c, tls, t, name, verify);
  }
  c->tls = tls;
  return 0;
}

int cs__tls_done(const cs_conn_t *c) { return c->tls && c->tls->done; }

int cs__tls_heard(const cs_conn_t *c) { return c->tls && BIO_number_written(c->tls->rbio) > 0; }

const char *cs__tls_errmsg(const cs_conn_t *c) {
  return c->tls && c->tls->err[0] ? c->tls->err : "tls: error";
}

/* Writes out whatever OpenSSL has produced. */
static int tls_flush(cs_conn_t *c) {
  BIO *w = c->tls->wbio;
  char *data;
  long len = BIO_get_mem_data(w, &data);
  if (len <= 0)
    return 0;
  int rc = cs__conn_write_raw(c, data, (size_t)len);
  (void)BIO_reset(w);
  return rc;
}

/* Records why the connection failed, as its sticky error. */
static int tls_fail(cs_conn_t *c, int ret) {
  cs_tls_t *tls = c->tls;
  long vr = SSL_get_verify_result(tls->ssl);
  int e = SSL_get_error(tls->ssl, ret);
  if (!tls->done && vr != X509_V_OK) {
    snprintf(tls->err, sizeof tls->err, "tls: certificate verify failed: %s",
             X509_verify_cert_error_string(vr));
    ERR_clear_error();
  } else if (e == SSL_ERROR_SSL) {
    tls_error(tls->err, sizeof tls->err, tls->done ? NULL : "handshake failed");
  } else {
    snprintf(tls->err, sizeof tls->err, "tls: %s", tls->done ? "error" : "handshake failed");
    ERR_clear_error();
  }
  tls_flush(c); /* the alert, if OpenSSL made one */
  return CS_ETLS;
}

/* A memory BIO keeps the largest size it ever had (a reset keeps it), and
 * a handshake's flights are the largest messages most connections see:
 * once it is over, each BIO that holds nothing is swapped for a new one,
 * so that an idle connection does not keep them (as SSL_MODE_RELEASE_BUFFERS
 * does for OpenSSL's own buffers). */
static void tls_shed(cs_tls_t *tls) {
  if (BIO_ctrl_pending(tls->rbio) == 0) {
    BIO *r = BIO_new(BIO_s_mem());
    if (r != NULL) {
      BIO_set_mem_eof_return(r, -1);
      SSL_set0_rbio(tls->ssl, r); /* frees the old one */
      tls->rbio = r;
    }
  }
  if (BIO_ctrl_pending(tls->wbio) == 0) {
    BIO *w = BIO_new(BIO_s_mem());
    if (w != NULL) {
      SSL_set0_wbio(tls->ssl, w);
      tls->wbio = w;
    }
  }
}

/* Takes the handshake as far as the bytes at hand allow. Returns 0 (done
 * or waiting for more) or CS_ETLS. */
static int tls_handshake(cs_conn_t *c) {
  cs_tls_t *tls = c->tls;
  ERR_clear_error(); /* see cs__tls_feed */
  int ret = SSL_do_handshake(tls->ssl);
  if (ret == 1) {
    tls->done = 1;
    if (c->server)
      c->server->stats.tls_handshakes++;
    if (tls_flush(c) < 0)
      return CS_ETLS;
    tls_shed(tls);
    return 0;
  }
  int e = SSL_get_error(tls->ssl, ret);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    tls_flush(c);
    return 0;
  }
  return tls_fail(c, ret);
}

int cs__tls_start(cs_conn_t *c) {
  int rc = tls_handshake(c);
  if (rc < 0 && c->server)
    c->server->stats.tls_failures++;
  return rc;
}

/* Where decrypted bytes go: after the live ones of c->rbuf, in the
 * runtime's scratch area when the buffer is empty (read_cb makes a
 * borrowed buffer owned before it returns, as for plaintext). */
static int tls_room(cs_conn_t *c, char **dst, size_t *room) {
  cs_buf_t *b = &c->rbuf;
  cs_runtime_t *rt = c->rt;
  if (b->len == 0 && b->cap == 0 && !rt->scratch_busy) {
    b->base = rt->scratch;
    b->off = 0;
  }
  if (b->cap == 0 && b->base == rt->scratch && b->off + b->len < CS_SCRATCH_SIZE) {
    *dst = b->base + b->off + b->len;
    *room = CS_SCRATCH_SIZE - b->off - b->len;
    return 0;
  }
  if (cs__buf_reserve(b, 16384) != 0)
    return UV_ENOMEM;
  *dst = b->base + b->off + b->len;
  *room = b->cap - b->off - b->len;
  return 0;
}

int cs__tls_feed(cs_conn_t *c, const char *data, size_t len) {
  cs_tls_t *tls = c->tls;
  if (BIO_write(tls->rbio, data, (int)len) != (int)len)
    return UV_ENOMEM;
  if (!tls->done) {
    int rc = cs__tls_start(c);
    if (rc < 0 || !tls->done)
      return rc;
  }
  for (;;) {
    char *dst;
    size_t room;
    if (tls_room(c, &dst, &room) != 0)
      return UV_ENOMEM;
    /* SSL_get_error() reads the thread's error queue: one left there by
     * anyone else (a Lua module, another connection) would turn "want
     * more bytes" into this connection's failure. So it starts empty. */
    ERR_clear_error();
    int n = SSL_read(tls->ssl, dst, room > INT32_MAX ? INT32_MAX : (int)room);
    if (n > 0) {
      c->rbuf.len += (size_t)n;
      continue;
    }
    int e = SSL_get_error(tls->ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      tls_flush(c); /* a key update's answer, say */
      return 0;
    }
    if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: a clean end */
      c->eof = 1;
      return 0;
    }
    return tls_fail(c, n);
  }
}

int cs__tls_write(cs_conn_t *c, const char *data, size_t len) {
  cs_tls_t *tls = c->tls;
  while (len > 0) {
    int chunk = len > 16384 ? 16384 : (int)len;
    ERR_clear_error(); /* see cs__tls_feed */
    int n = SSL_write(tls->ssl, data, chunk);
    if (n <= 0)
      return tls_fail(c, n);
    data += n;
    len -= (size_t)n;
  }
  return tls_flush(c);
}

void cs__tls_shutdown(cs_conn_t *c) {
  cs_tls_t *tls = c->tls;
  if (tls == NULL || !tls->done || tls->shut || tls->err[0])
    return;
  tls->shut = 1;
  SSL_shutdown(tls->ssl); /* queues close_notify; the peer's is not awaited */
  ERR_clear_error();
  tls_flush(c);
}

/* [-0, +1] conn:tls()'s table. */
void cs__tls_push_info(lua_State *L, const cs_conn_t *c) {
  SSL *ssl = c->tls->ssl;
  lua_createtable(L, 0, 6);
  lua_pushstring(L, SSL_get_version(ssl));
  lua_setfield(L, -2, "version");
  lua_pushboolean(L, SSL_session_reused(ssl));
  lua_setfield(L, -2, "reused");
  const char *cipher = SSL_get_cipher_name(ssl);
  if (cipher) {
    lua_pushstring(L, cipher);
    lua_setfield(L, -2, "cipher");
  }
  const unsigned char *alpn;
  unsigned alpn_len;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
  if (alpn_len > 0) {
    lua_pushlstring(L, (const char *)alpn, alpn_len);
    lua_setfield(L, -2, "alpn");
  }
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name) {
    lua_pushstring(L, name);
    lua_setfield(L, -2, "server_name");
  }
  X509 *peer = SSL_get0_peer_certificate(ssl);
  if (peer) {
    char buf[512];
    X509_NAME_oneline(X509_get_subject_name(peer), buf, sizeof buf);
    lua_pushstring(L, buf);
    lua_setfield(L, -2, "peer_subject");
  }
}
