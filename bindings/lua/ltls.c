/* TLS from Lua (the engine is runtime/tls.c):
 *   core.tls_context(opts, is_server) -> ctx | nil, err
 *   core.tls_make_cert(opts) -> cert_pem, key_pem   (for tests: see below)
 *   conn:_tls_handshake([ctx, name, verify,] timeout) -> true | nil, err
 *   conn:tls() -> {version, reused, cipher, alpn, server_name, peer_subject} | nil
 *   server:_settls(ctx)
 * coserve.lua turns these into the `tls` options of servers and clients
 * and conn:sslhandshake. */
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "internal.h"

#define CS_TLS_CTX_MT "coserve.tls_ctx"

typedef struct {
  cs_tls_ctx_t *t;
} ctxbox_t;

static const char *opt_string(lua_State *L, int idx, const char *name) {
  lua_getfield(L, idx, name);
  const char *s = NULL;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "tls: option '%s' must be a string", name);
    s = lua_tostring(L, -1);
  }
  lua_pop(L, 1); /* the table keeps the string alive */
  return s;
}

/* A string, or an array of at most max strings, into out[]. */
static int opt_list(lua_State *L, int idx, const char *name, const char **out, int max) {
  lua_getfield(L, idx, name);
  int n = 0;
  if (lua_type(L, -1) == LUA_TSTRING) {
    out[n++] = lua_tostring(L, -1);
  } else if (lua_istable(L, -1)) {
    int len = (int)lua_objlen(L, -1);
    if (len > max)
      luaL_error(L, "tls: option '%s' takes at most %d names", name, max);
    for (int i = 1; i <= len; i++) {
      lua_rawgeti(L, -1, i);
      if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "tls: option '%s' must hold strings", name);
      out[n++] = lua_tostring(L, -1);
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, -1)) {
    luaL_error(L, "tls: option '%s' must be a string or an array of strings", name);
  }
  lua_pop(L, 1);
  return n;
}

static int ctx_gc(lua_State *L) {
  ctxbox_t *box = lua_touserdata(L, 1);
  cs__tls_ctx_free(box->t);
  box->t = NULL;
  return 0;
}

/* core.tls_context(opts, is_server) -> ctx | nil, err. Files are read now:
 * a server's start() makes its context, so a reload reads renewed ones. */
static int ltls_context(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  cs_tls_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.is_server = lua_toboolean(L, 2);
  cfg.cert = opt_string(L, 1, "cert");
  cfg.key = opt_string(L, 1, "key");
  cfg.ca = opt_string(L, 1, "ca");
  cfg.ciphers = opt_string(L, 1, "ciphers");
  lua_getfield(L, 1, "verify");
  if (cfg.is_server) {
    static const char *const modes[] = {"none", "optional", "required", NULL};
    const char *v = lua_isnil(L, -1) ? "none" : lua_tostring(L, -1);
    int k = -1;
    for (int i = 0; v && modes[i]; i++)
      if (strcmp(v, modes[i]) == 0)
        k = i;
    if (k < 0)
      return luaL_error(L, "tls: option 'verify' must be \"none\", \"optional\" or \"required\"");
    cfg.verify = (cs_tls_verify_t)k;
  } else {
    cfg.verify = lua_isnil(L, -1) || lua_toboolean(L, -1) ? CS_TLS_VERIFY_REQUIRED
                                                          : CS_TLS_VERIFY_NONE;
  }
  lua_pop(L, 1);
  cfg.nprotocols = opt_list(L, 1, "protocols", cfg.protocols, 2);
  cfg.nalpn = opt_list(L, 1, "alpn", cfg.alpn, 8);
  lua_getfield(L, 1, "sni");
  if (lua_istable(L, -1)) {
    for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {
      if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1))
        return luaL_error(L, "tls: option 'sni' maps host names to {cert =, key =}");
      if (cfg.nsni == (int)(sizeof cfg.sni / sizeof cfg.sni[0]))
        return luaL_error(L, "tls: option 'sni' takes at most %d names",
                          (int)(sizeof cfg.sni / sizeof cfg.sni[0]));
      int e = lua_gettop(L);
      cfg.sni[cfg.nsni].name = lua_tostring(L, -2);
      cfg.sni[cfg.nsni].cert = opt_string(L, e, "cert");
      cfg.sni[cfg.nsni].key = opt_string(L, e, "key");
      if (cfg.sni[cfg.nsni].cert == NULL)
        return luaL_error(L, "tls: sni entry '%s' needs cert", cfg.sni[cfg.nsni].name);
      cfg.nsni++;
    }
  } else if (!lua_isnil(L, -1)) {
    return luaL_error(L, "tls: option 'sni' must be a table");
  }
  char err[512] = "";
  cs_tls_ctx_t *t = cs__tls_ctx_new(&cfg, err, sizeof err);
  lua_settop(L, 1);
  if (t == NULL) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  ctxbox_t *box = lua_newuserdata(L, sizeof *box);
  box->t = t;
  luaL_getmetatable(L, CS_TLS_CTX_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static cs_conn_t *conn_arg(lua_State *L) {
  cs_connbox_t *box = cs__checkudata(L, 1, cs__runtime_get(L)->conn_mt, CS_CONN_MT);
  return box->c;
}

/* conn:_tls_handshake([ctx, name, verify,] timeout) -> true | nil, err
 * A server's connection takes its server's context; a client's is given
 * ctx, the name to send (SNI) and check, and whether to verify. Bytes that
 * came before are the first of the handshake. */
static int lconn_tls_handshake(lua_State *L) {
  cs_conn_t *c = conn_arg(L);
  if (c == NULL)
    return cs__push_error(L, CS_ECLOSED);
  double timeout = luaL_optnumber(L, 5, c->read_timeout);
  if (c->tls == NULL) {
    cs_tls_ctx_t *t;
    const char *name = NULL;
    int verify = 0;
    if (c->server) {
      t = c->server->tls;
      if (t == NULL)
        return luaL_error(L, "sslhandshake: the server has no tls options");
    } else {
      t = ((ctxbox_t *)luaL_checkudata(L, 2, CS_TLS_CTX_MT))->t;
      name = luaL_optstring(L, 3, NULL);
      verify = lua_toboolean(L, 4);
    }
    cs__task_current(L, "sslhandshake");
    int rc = cs__tls_attach(c, t, name, verify);
    if (rc < 0)
      return cs__push_error(L, rc);
    cs_buf_t early = c->rbuf;
    memset(&c->rbuf, 0, sizeof c->rbuf);
    rc = early.len > 0 ? cs__tls_feed(c, cs__buf_data(&early), early.len) : cs__tls_start(c);
    cs__buf_free(&early);
    /* Outside a read callback a buffer must not borrow the scratch area. */
    if (cs__buf_own(&c->rbuf) != 0 && rc == 0)
      rc = UV_ENOMEM;
    if (rc < 0)
      return cs__conn_push_error(L, c, rc);
  }
  cs_read_t r = {.kind = CS_READ_HANDSHAKE};
  return cs__conn_read(L, c, &r, timeout < 0 ? -1 : timeout, "sslhandshake");
}

/* conn:tls() -> the session's parameters, or nil (no TLS, or not yet). */
static int lconn_tls(lua_State *L) {
  cs_conn_t *c = conn_arg(L);
  if (c == NULL || !cs__tls_done(c))
    return 0;
  cs__tls_push_info(L, c);
  return 1;
}

/* server:_settls(ctx): the context its connections handshake with; the
 * server's environment keeps it alive. */
static int lserver_settls(lua_State *L) {
  cs_server_t *s = luaL_checkudata(L, 1, CS_SERVER_MT);
  ctxbox_t *box = luaL_checkudata(L, 2, CS_TLS_CTX_MT);
  s->tls = box->t;
  lua_getfenv(L, 1);
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "tls_ctx");
  return 0;
}

/* ---- certificates for tests ---- */

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value) {
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
  X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
  if (ext == NULL)
    return -1;
  int ok = X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  return ok ? 0 : -1;
}

static char *pem_of(BIO *b, size_t *len) {
  char *p;
  *len = (size_t)BIO_get_mem_data(b, &p);
  return p;
}

/* core.tls_make_cert{cn =, san = "DNS:a,IP:127.0.0.1", ca = true,
 *   issuer_cert = PEM, issuer_key = PEM, not_before = s, not_after = s}
 * -> cert PEM, key PEM. An ECDSA P-256 key and a SHA-256 signature;
 * self-signed without an issuer; validity in seconds from now (default
 * -3600 .. +30 days). For tests: coserve.testing.tls() builds a CA and
 * certificates from it. */
static int ltls_make_cert(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *cn = opt_string(L, 1, "cn");
  const char *san = opt_string(L, 1, "san");
  const char *icert = opt_string(L, 1, "issuer_cert");
  const char *ikey = opt_string(L, 1, "issuer_key");
  lua_getfield(L, 1, "ca");
  int is_ca = lua_toboolean(L, -1);
  lua_getfield(L, 1, "not_before");
  long nb = (long)luaL_optnumber(L, -1, -3600);
  lua_getfield(L, 1, "not_after");
  long na = (long)luaL_optnumber(L, -1, 30 * 86400);
  lua_settop(L, 1);

  const char *why = "cannot make a certificate";
  EVP_PKEY *key = EVP_EC_gen("P-256"), *signer = NULL;
  X509 *x = X509_new(), *issuer = NULL;
  BIO *out = BIO_new(BIO_s_mem()), *kout = BIO_new(BIO_s_mem());
  if (key == NULL || x == NULL || out == NULL || kout == NULL)
    goto fail;
  if (icert && ikey) {
    BIO *b = BIO_new_mem_buf(icert, -1);
    issuer = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    b = BIO_new_mem_buf(ikey, -1);
    signer = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    why = "bad issuer certificate or key";
    if (issuer == NULL || signer == NULL)
      goto fail;
    why = "cannot make a certificate";
  }
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
  BN_free(bn);
  X509_set_version(x, 2);
  X509_gmtime_adj(X509_getm_notBefore(x), nb);
  X509_gmtime_adj(X509_getm_notAfter(x), na);
  X509_set_pubkey(x, key);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
                             (const unsigned char *)(cn ? cn : "coserve test"), -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x));
  X509 *ix = issuer ? issuer : x;
  if (add_ext(x, ix, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "CA:FALSE") ||
      add_ext(x, ix, NID_key_usage,
              is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature") ||
      add_ext(x, ix, NID_subject_key_identifier, "hash") ||
      (!is_ca && add_ext(x, ix, NID_ext_key_usage, "serverAuth,clientAuth")) ||
      (san && add_ext(x, ix, NID_subject_alt_name, san)))
    goto fail;
  if (issuer && add_ext(x, ix, NID_authority_key_identifier, "keyid:always"))
    goto fail;
  if (X509_sign(x, signer ? signer : key, EVP_sha256()) == 0 ||
      PEM_write_bio_X509(out, x) != 1 ||
      PEM_write_bio_PrivateKey(kout, key, NULL, NULL, 0, NULL, NULL) != 1)
    goto fail;
  size_t len;
  const char *p = pem_of(out, &len);
  lua_pushlstring(L, p, len);
  p = pem_of(kout, &len);
  lua_pushlstring(L, p, len);
  BIO_free(out);
  BIO_free(kout);
  X509_free(x);
  X509_free(issuer);
  EVP_PKEY_free(key);
  EVP_PKEY_free(signer);
  return 2;
fail:
  ERR_clear_error();
  BIO_free(out);
  BIO_free(kout);
  X509_free(x);
  X509_free(issuer);
  EVP_PKEY_free(key);
  EVP_PKEY_free(signer);
  return luaL_error(L, "tls_make_cert: %s", why);
}

void cs__open_tls(lua_State *L, cs_runtime_t *rt) {
  luaL_newmetatable(L, CS_TLS_CTX_MT);
  lua_pushcfunction(L, ctx_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  static const luaL_Reg core_funcs[] = {
      {"tls_context", ltls_context}, {"tls_make_cert", ltls_make_cert}, {NULL, NULL}};
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, core_funcs, 1);
  static const luaL_Reg conn_funcs[] = {
      {"_tls_handshake", lconn_tls_handshake}, {"tls", lconn_tls}, {NULL, NULL}};
  luaL_getmetatable(L, CS_CONN_MT);
  lua_getfield(L, -1, "methods");
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, conn_funcs, 1);
  lua_pop(L, 2);
  static const luaL_Reg server_funcs[] = {{"_settls", lserver_settls}, {NULL, NULL}};
  luaL_getmetatable(L, CS_SERVER_MT);
  lua_getfield(L, -1, "methods");
  lua_pushlightuserdata(L, rt);
  luaL_setfuncs(L, server_funcs, 1);
  lua_pop(L, 2);
}
