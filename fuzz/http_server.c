/* libFuzzer harness for coserve.http end to end. Each input is one run of
 * a runtime created once: the chunk below starts coserve.http on
 * 127.0.0.1 (port 0) with a few routes and small limits, connects a
 * client, sends the input in 1 to 3 pieces, then half-closes, closes, or
 * keeps the connection open, reads what comes back, checks it parses as
 * HTTP responses, shuts the app down, and checks that nothing is left
 * behind. How the input is cut and how the client ends come from a hash
 * of the input. An unexpected Lua error or log message, a malformed
 * response, a connection the server keeps, or a task or connection left
 * over abort()s, so that libFuzzer reports the input; so does a SIGPIPE
 * if the runtime left SIGPIPE at its default (which kills the process
 * when a peer goes away). Built and run by fuzz/run. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "coserve.h"
#include "expect_clean.h"

static cs_runtime_t *rt;

static const char app_chunk[] =
    "local coserve = require 'coserve'\n"
    "local core = require 'coserve.core'\n"
    "local http = require 'coserve.http'\n"
    "local input, nsends, mode = FUZZ_INPUT, FUZZ_NSENDS, FUZZ_MODE\n"
    "local cuts = { FUZZ_CUT1, FUZZ_CUT2 }\n"
    "local failure\n"
    "local function fail(msg) failure = failure or msg end\n"
    /* The one expected error is /boom's; anything else logged is a bug. */
    "coserve.log = function(level, msg)\n"
    "  if not (level == 'error' and tostring(msg):find('kaboom', 1, true)) then\n"
    "    fail('logged: ' .. tostring(level) .. ': ' .. tostring(msg))\n"
    "  end\n"
    "end\n"
    "local app = http.server{ host = '127.0.0.1', port = 0, max_header = 1024,\n"
    "  max_body = 4096, header_timeout = 0.2, keepalive_timeout = 0.05, read_timeout = 0.1 }\n"
    "app:route('POST', '/echo', function(req, res)\n"
    "  local body = req:body()\n"
    "  if body then res:send(200, { ['content-type'] = 'application/octet-stream' }, body) end\n"
    "end)\n"
    "app:route('*', '/read', function(req, res)\n"
    "  for piece in req:reader() do\n"
    "    if not res:write(piece) then return end\n"
    "  end\n"
    "end)\n"
    "app:route('GET', '/stream', function(_, res)\n"
    "  for i = 1, 3 do\n"
    "    if not res:write('part ' .. i .. ';') then return end\n"
    "  end\n"
    "end)\n"
    "app:route('GET', '/hello/:name', function(req, res)\n"
    "  res:send(200, { ['content-type'] = 'text/plain' },\n"
    "    'hello ' .. req.params.name .. ' ' .. tostring(req.query.q) .. ' ' ..\n"
    "    tostring(req.headers['User-Agent']))\n"
    "end)\n"
    "app:route('GET', '/boom', function() error('kaboom') end)\n"
    "app._server:onerror(function(err) fail('connection handler failed: ' .. tostring(err)) end)\n"
    "local srv = coserve.spawn(function() return app:start() end)\n"
    "local port = app.port\n"
    "if not port or port == 0 then\n"
    "  local _, _, err = srv:join(0)\n"
    "  error('the server did not start: ' .. tostring(err), 0)\n"
    "end\n"
    "local c, err = coserve.connect('127.0.0.1', port, { timeout = 1 })\n"
    "if not c then error('connect: ' .. tostring(err), 0) end\n"
    "local prev = 0\n"
    "for i = 1, nsends do\n"
    "  local stop = i == nsends and #input or cuts[i]\n"
    "  if stop > prev then\n"
    "    if not c:send(input:sub(prev + 1, stop)) then break end\n"
    "    prev = stop\n"
    "  end\n"
    "  if i < nsends then coserve.sleep(0) end\n"
    "end\n"
    /* What came back must be whole HTTP responses when the server ended
     * the connection cleanly (a reset may cut them). The parser is the
     * glue under test too; responses to HEAD carry no body, so inputs
     * that may hold a HEAD request are not checked. */
    "local function check_responses(bytes, clean)\n"
    "  local p = core.http_parser('response')\n"
    "  local pos = 1\n"
    "  while pos <= #bytes do\n"
    "    local e = bytes:find('\\r\\n\\r\\n', pos, true)\n"
    "    if not e then\n"
    "      if clean then fail('a cut response head: ' .. ('%q'):format(bytes:sub(pos))) end\n"
    "      return\n"
    "    end\n"
    "    local m, herr = p:head(bytes:sub(pos, e + 3))\n"
    "    if not m then\n"
    "      return fail('a bad response head (' .. herr .. '): ' .. ('%q'):format(bytes:sub(pos, e + 3)))\n"
    "    end\n"
    "    pos = e + 4\n"
    "    if m.body ~= 'none' then\n"
    "      local done = false\n"
    "      if pos <= #bytes then\n"
    "        local data, used, complete = p:body(bytes:sub(pos))\n"
    "        if not data then return fail('a bad response body: ' .. used) end\n"
    "        pos, done = pos + used, complete\n"
    "      end\n"
    "      if not done then\n"
    "        if m.body == 'eof' then\n"
    "          local data, _, complete = p:body('')\n"
    "          if not (data and complete) then fail('an eof response body did not end') end\n"
    "        elseif clean then\n"
    "          fail('a cut response body')\n"
    "        end\n"
    "        return\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if mode == 'close' then\n"
    "  c:close()\n"
    "else\n"
    "  if mode == 'half' then fuzz_halfclose(c) end\n"
    "  local got = {}\n"
    "  while true do\n"
    "    local data, rerr = c:receiveany(65536, 1)\n"
    "    if not data then\n"
    "      if rerr == 'timeout' then fail('the server kept the connection open for 1 s') end\n"
    "      if not input:find('HEAD', 1, true) then\n"
    "        check_responses(table.concat(got), rerr == 'closed')\n"
    "      end\n"
    "      break\n"
    "    end\n"
    "    got[#got + 1] = data\n"
    "  end\n"
    "  c:close()\n"
    "end\n"
    /* The server must let go of the connection by itself. */
    "local deadline, tries = coserve.now() + 1, 0\n"
    "while app:stats().connections > 0 do\n"
    "  if coserve.now() > deadline then\n"
    "    fail('the server kept a connection for 1 s after the client closed')\n"
    "    break\n"
    "  end\n"
    "  tries = tries + 1\n"
    "  coserve.sleep(tries < 50 and 0 or 0.001)\n"
    "end\n"
    "app:shutdown()\n"
    "local ok, started, serr = srv:join(1)\n"
    "if not ok then fail('the server did not stop: ' .. tostring(started))\n"
    "elseif not started then fail('app:start() failed: ' .. tostring(serr)) end\n"
    FUZZ_LUA_SETTLE;

FUZZ_ON_SIGPIPE("http_server")

static uint64_t fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

static void set_int(lua_State *L, const char *name, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setglobal(L, name);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  rt = cs_runtime_new();
  if (rt == NULL)
    abort();
  /* The runtime ignores SIGPIPE when the host has not set it: a write to
   * a peer that has gone must fail with EPIPE, not kill the server. */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
    signal(SIGPIPE, on_sigpipe);
  cs_runtime_set_log_level(rt, CS_LOG_WARN);
  lua_register(cs_runtime_lua(rt), "fuzz_halfclose", fuzz_l_halfclose);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = cs_runtime_lua(rt);
  int top = lua_gettop(L);
  uint64_t h = fnv1a(data, size);
  size_t a = (size_t)((h >> 8) % (size + 1)), b = (size_t)((h >> 24) % (size + 1));
  static const char *const modes[8] = {"half", "half", "half", "half",
                                       "half", "close", "close", "keep"};
  lua_pushlstring(L, (const char *)data, size);
  lua_setglobal(L, "FUZZ_INPUT");
  set_int(L, "FUZZ_NSENDS", 1 + (lua_Integer)(h % 3));
  set_int(L, "FUZZ_CUT1", (lua_Integer)(a < b ? a : b));
  set_int(L, "FUZZ_CUT2", (lua_Integer)(a < b ? b : a));
  lua_pushstring(L, modes[(h >> 40) % 8]);
  lua_setglobal(L, "FUZZ_MODE");

  if (cs_runtime_run_string(rt, app_chunk, "=http_server_fuzz") != 0) {
    fprintf(stderr, "http_server fuzz: the run failed: %s\n", cs_runtime_error(rt));
    abort();
  }

  fuzz_expect_clean(L, "http_server");
  lua_settop(L, top);
  lua_pushnil(L);
  lua_setglobal(L, "FUZZ_INPUT");
  return 0;
}
