/* What WebSocket (RFC 6455) needs from C: SHA-1 for the handshake's
 * Sec-WebSocket-Accept, and XOR masking and UTF-8 validation, which are
 * too slow byte by byte in Lua for large frames. Framing itself is Lua
 * (coserve/websocket.lua).
 *
 *   core.sha1(s) -> 20-byte digest
 *   core.ws_mask(data, key4) -> data XOR the repeating 4-byte key
 *   core.utf8_valid(s) -> whether s is UTF-8 (RFC 3629) */
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define ROL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

static void sha1_block(uint32_t h[5], const unsigned char *p) {
  uint32_t w[80];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
           (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 80; i++)
    w[i] = ROL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
  for (int i = 0; i < 80; i++) {
    uint32_t f, k;
    if (i < 20)
      f = (b & c) | (~b & d), k = 0x5A827999;
    else if (i < 40)
      f = b ^ c ^ d, k = 0x6ED9EBA1;
    else if (i < 60)
      f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
    else
      f = b ^ c ^ d, k = 0xCA62C1D6;
    uint32_t t = ROL(a, 5) + f + e + k + w[i];
    e = d, d = c, c = ROL(b, 30), b = a, a = t;
  }
  h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

void cs__sha1(const void *data, size_t len, unsigned char out[20]) {
  uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  const unsigned char *p = data;
  size_t left = len;
  for (; left >= 64; p += 64, left -= 64)
    sha1_block(h, p);
  unsigned char tail[128] = {0};
  memcpy(tail, p, left);
  tail[left] = 0x80;
  size_t n = left + 1 + 8 <= 64 ? 64 : 128;
  uint64_t bits = (uint64_t)len * 8;
  for (int i = 0; i < 8; i++)
    tail[n - 1 - i] = (unsigned char)(bits >> (8 * i));
  sha1_block(h, tail);
  if (n == 128)
    sha1_block(h, tail + 64);
  for (int i = 0; i < 5; i++) {
    out[4 * i] = (unsigned char)(h[i] >> 24);
    out[4 * i + 1] = (unsigned char)(h[i] >> 16);
    out[4 * i + 2] = (unsigned char)(h[i] >> 8);
    out[4 * i + 3] = (unsigned char)h[i];
  }
}

static int lcore_sha1(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  unsigned char digest[20];
  cs__sha1(s, len, digest);
  lua_pushlstring(L, (const char *)digest, sizeof digest);
  return 1;
}

static int lcore_ws_mask(lua_State *L) {
  size_t len, klen;
  const char *data = luaL_checklstring(L, 1, &len);
  const char *key = luaL_checklstring(L, 2, &klen);
  luaL_argcheck(L, klen == 4, 2, "4-byte key expected");
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < len;) {
    char *out = luaL_prepbuffer(&b);
    size_t n = len - i < LUAL_BUFFERSIZE ? len - i : LUAL_BUFFERSIZE;
    for (size_t j = 0; j < n; j++, i++)
      out[j] = (char)(data[i] ^ key[i & 3]);
    luaL_addsize(&b, n);
  }
  luaL_pushresult(&b);
  return 1;
}

/* RFC 3629 UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
static int utf8_valid(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0)
      len = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0)
      len = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0)
      len = 4, cp = c & 0x07, min = 0x10000;
    else
      return 0;
    if (n - i < len)
      return 0;
    for (size_t k = 1; k < len; k++) {
      unsigned cc = s[i + k];
      if ((cc & 0xC0) != 0x80)
        return 0;
      cp = cp << 6 | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return 0;
    i += len;
  }
  return 1;
}

static int lcore_utf8_valid(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushboolean(L, utf8_valid((const unsigned char *)s, len));
  return 1;
}

void cs__open_wsutil(lua_State *L) {
  lua_pushcfunction(L, lcore_utf8_valid);
  lua_setfield(L, -2, "utf8_valid");
  lua_pushcfunction(L, lcore_sha1);
  lua_setfield(L, -2, "sha1");
  lua_pushcfunction(L, lcore_ws_mask);
  lua_setfield(L, -2, "ws_mask");
}
