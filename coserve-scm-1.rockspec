-- LuaRocks builds coserve with its CMake build (docs/install.md):
--   luarocks --lua-version 5.1 make --local       (from a checkout; LuaJIT is Lua 5.1)
-- It installs the Lua module coserve.so into the tree's lib/lua/5.1 and the
-- coserve command into its bin; the C API files (coserve.h, libcoserve.a,
-- coserve.pc) are left out: `cmake --install` or the .deb install those.
-- The build needs the Debian packages scripts/setup.sh lists (libluajit2-5.1-dev,
-- libuv1-dev, libssl-dev, zlib1g-dev, node-llhttp, cmake, pkg-config): they
-- are system libraries, not rocks, so there is nothing here to download.
rockspec_format = "3.0"
package = "coserve"
version = "scm-1"

source = {
  -- No published repository yet: `luarocks make` builds the checkout it runs
  -- in and never fetches this. Set it when the project is published.
  url = "git+https://example.invalid/coserve.git",
}

description = {
  summary = "Coroutine-style server runtime for LuaJIT on libuv",
  detailed = [[
coserve runs Lua server apps on LuaJIT and libuv, each connection's handler
in its own coroutine, with OpenResty's cosocket API: TCP, UDP, TLS, HTTP/1.1
and WebSocket, worker processes with zero-downtime reload, systemd socket
activation. `require "coserve"` from plain LuaJIT, or run apps with the
`coserve` command.
]],
  -- license: to be set when the project states one
  labels = { "server", "coroutines", "libuv", "luajit", "http", "websocket" },
}

-- The module is built against LuaJIT (pkg-config luajit), whose ABI is Lua 5.1's.
dependencies = {
  "lua == 5.1",
}

build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "RelWithDebInfo",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    CMAKE_INSTALL_BINDIR = "$(BINDIR)",
    COSERVE_INSTALL_CMOD = "$(LIBDIR)",
    COSERVE_INSTALL_DEVEL = "OFF",
  },
}
