/* Digests, HMAC, base64 and CRC-32 for coserve.ngx (ngx.md5, ngx.sha1_bin,
 * ngx.hmac_sha1, ngx.encode_base64, ngx.crc32_short, ...), on the OpenSSL
 * libcrypto and zlib that Debian ships: no digest is written by hand here.
 *   core.digest(name, data [, hex]) -> raw digest (or lowercase hex)
 *   core.hmac(name, key, data) -> raw MAC
 *   core.base64_encode(data [, no_padding]) -> string
 *   core.base64_decode(text) -> string | nil (malformed input)
 *   core.crc32(data) -> unsigned 32-bit number
 *   core.null: the NULL light userdata (ngx.null, cjson.null)
 * Unknown digest names raise an argument error; nothing prints. */
#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <zlib.h>

#include "internal.h"


static const EVP_MD *check_md(lua_State *L, int idx) {
  const char *name = luaL_checkstring(L, idx);
  const EVP_MD *md = EVP_get_digestbyname(name);
  if (md == NULL)
    luaL_argerror(L, idx, lua_pushfstring(L, "unknown digest '%s'", name));
  return md;
}

static void push_hex(lua_State *L, const unsigned char *p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  char out[2 * EVP_MAX_MD_SIZE];
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  lua_pushlstring(L, out, 2 * n);
}

/* core.digest(name, data [, hex]) */
static int lcrypto_digest(lua_State *L) {
  const EVP_MD *md = check_md(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int outlen = 0;
  if (!EVP_Digest(data, len, out, &outlen, md, NULL))
    return luaL_error(L, "digest: %s failed", luaL_checkstring(L, 1));
  if (lua_toboolean(L, 3))
    push_hex(L, out, outlen);
  else
    lua_pushlstring(L, (const char *)out, outlen);
  return 1;
}

/* core.hmac(name, key, data) */
static int lcrypto_hmac(lua_State *L) {
  const EVP_MD *md = check_md(L, 1);
  size_t klen, len;
  const char *key = luaL_checklstring(L, 2, &klen);
  const char *data = luaL_checklstring(L, 3, &len);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int outlen = 0;
  if (HMAC(md, key, (int)klen, (const unsigned char *)data, len, out, &outlen) == NULL)
    return luaL_error(L, "hmac: %s failed", luaL_checkstring(L, 1));
  lua_pushlstring(L, (const char *)out, outlen);
  return 1;
}

/* core.base64_encode(data [, no_padding]) */
static int lcrypto_b64_encode(lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  if (len > (size_t)INT32_MAX / 4 * 3 - 3)
    return luaL_argerror(L, 1, "too long");
  size_t cap = 4 * ((len + 2) / 3) + 1;
  unsigned char *out = (unsigned char *)lua_newuserdata(L, cap);
  int n = EVP_EncodeBlock(out, (const unsigned char *)data, (int)len);
  if (lua_toboolean(L, 2))
    while (n > 0 && out[n - 1] == '=')
      n--;
  lua_pushlstring(L, (const char *)out, (size_t)n);
  return 1;
}

/* core.base64_decode(text): padding is optional, as nginx's
 * ngx_decode_base64; anything but the alphabet makes it return nil. */
static int lcrypto_b64_decode(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  size_t n = 0;
  while (n < len && text[n] != '=')
    n++;
  for (size_t i = n; i < len; i++) /* only '=' after the first '=' */
    if (text[i] != '=')
      return lua_pushnil(L), 1;
  if (n % 4 == 1 || len - n > 2 || n > (size_t)INT32_MAX - 4)
    return lua_pushnil(L), 1;
  size_t pad = (4 - n % 4) % 4;
  unsigned char *in = (unsigned char *)lua_newuserdata(L, n + pad + 1);
  memcpy(in, text, n);
  memset(in + n, '=', pad);
  unsigned char *out = (unsigned char *)lua_newuserdata(L, (n + pad) / 4 * 3 + 1);
  for (size_t i = 0; i < n; i++) { /* EVP_DecodeBlock skips blanks: nginx does not */
    unsigned char ch = in[i];
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
          ch == '+' || ch == '/'))
      return lua_pushnil(L), 1;
  }
  int m = EVP_DecodeBlock(out, in, (int)(n + pad));
  if (m < 0)
    return lua_pushnil(L), 1;
  lua_pushlstring(L, (const char *)out, (size_t)m - pad);
  return 1;
}

/* core.crc32(data) */
static int lcrypto_crc32(lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  uLong crc = crc32(0L, Z_NULL, 0);
  while (len > 0) { /* zlib takes a uInt length */
    uInt chunk = len > 0x40000000u ? 0x40000000u : (uInt)len;
    crc = crc32(crc, (const Bytef *)data, chunk);
    data += chunk;
    len -= chunk;
  }
  lua_pushnumber(L, (lua_Number)(crc & 0xffffffffUL));
  return 1;
}

void cs__open_crypto(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"digest", lcrypto_digest},
      {"hmac", lcrypto_hmac},
      {"base64_encode", lcrypto_b64_encode},
      {"base64_decode", lcrypto_b64_decode},
      {"crc32", lcrypto_crc32},
      {NULL, NULL}};
  for (const luaL_Reg *f = funcs; f->name; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
  /* ngx.null: the NULL light userdata, equal to cjson.null as in OpenResty. */
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
}
