-- LuaJIT bugs that coserve works around, checked against the LuaJIT that is
-- installed (OpenResty's luajit2, 2.1-20230119 on Debian 12).
--
-- LuaJIT issue #1066: a C function that calls lua_resume leaves the VM's
-- "current coroutine" (cur_L) pointing at the coroutine it resumed. If the C
-- function then raises an error instead of returning, nothing restores it,
-- and the next exit from a compiled trace writes its snapshot onto the wrong
-- coroutine's stack: a segmentation fault, with the JIT on only. It needs no
-- error inside the coroutine. Debian's LuaJIT 2.1.0-beta3 has it, so does
-- luajit2 2.1-20230119; upstream fixed it in September 2023 ("Restore cur_L
-- for specific Lua/C API use case"), luajit2 in v2.1-20231117.
--
-- core.run is such a C function: it resumes the tasks. It therefore
-- returns its task's error and coserve.run raises it from Lua (see
-- bindings/lua/lcore.c). Each case runs in a child process, because the
-- failure is a crash.
local proc = dofile("spec/support/process.lua")

-- A function compiled for one branch (hotloop=1: on its second call), so
-- that calling it with the other branch is a side exit from the trace.
local PRELUDE = [[
local function branchy(v)
  if v then return 1 else return 0 end
end
jit.on()
jit.opt.start("hotloop=1")
branchy(true)
branchy(true)
]]

-- Runs a Lua script with the installed luajit, no core file; preload: a
-- library for LD_PRELOAD, or "".
local function luajit(dir, preload, script, ...)
  local path = proc.write(dir .. "/case.lua", PRELUDE .. script)
  local cmd = { "sh", "-c", 'ulimit -c 0; LD_PRELOAD=$0 exec luajit "$@"', preload, path, ... }
  return proc.run(cmd, { timeout = 20 })
end

-- The ASan runtime that the sanitizer build's coserve.so links, or "": it
-- must be loaded first (scripts/test preloads it for busted, and
-- spec/support/helper.lua keeps it from children).
local function asan_runtime()
  local r = proc.run({ "sh", "-c", "ldd \"$0\" | grep -o '/[^ ]*libasan[^ ]*' | head -n 1",
    proc.BUILD .. "/lua/coserve.so" })
  return (r.out:gsub("%s+$", ""))
end

describe("LuaJIT #1066 (raising from C after lua_resume)", function()
  local dir
  before_each(function() dir = proc.tmpdir() end)
  after_each(function() proc.rmdir(dir) end)

  it("a failed coserve.run does not crash the next trace exit", function()
    local r = luajit(dir, asan_runtime(), [[
package.cpath = arg[1] .. "/lua/?.so;" .. package.cpath
local coserve = require "coserve"
local ok, err = pcall(coserve.run, function() local x; return x + 1 end)
branchy(false)
io.write(tostring(ok), "|", (tostring(err):match("[^\n]*")))
]], proc.BUILD)
    assert.are.same({ status = 0, err = "" }, { status = r.status, err = r.err })
    assert.matches("^false|.*attempt to perform arithmetic on local 'x' %(a nil value%)$", r.out)
  end)

  describe("the bug itself, in a C function of its own", function()
    -- resume_then_raise(f, raise): resumes a new coroutine running f, then
    -- raises from C if raise is true, else returns.
    local C = [[
#include <lauxlib.h>
#include <lua.h>
static int resume_then_raise(lua_State *L) {
  lua_State *co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  int st = lua_resume(co, 0);
  if (lua_toboolean(L, 2))
    return luaL_error(L, "raised after a resume (status %d)", st);
  return 0;
}
int luaopen_repro(lua_State *L) {
  lua_pushcfunction(L, resume_then_raise);
  return 1;
}
]]
    local SCRIPT = [[
package.cpath = arg[1] .. "/?.so;" .. package.cpath
local resume_then_raise = require "repro"
local ok, err = pcall(resume_then_raise, function() return 1 end, arg[2] == "raise")
branchy(false)
io.write(tostring(ok), "|", tostring(err))
]]

    local function build()
      proc.write(dir .. "/repro.c", C)
      local cc = proc.run({ "sh", "-c", "cc -std=c11 -Wall -Wextra -Werror -O1 -fPIC -shared " ..
        "$(pkg-config --cflags luajit) -o " .. proc.quote(dir .. "/repro.so") .. " " ..
        proc.quote(dir .. "/repro.c") })
      assert.are.same({ status = 0, err = "" }, { status = cc.status, err = cc.err })
    end

    it("returning from C after the resume is safe", function()
      build()
      local r = luajit(dir, "", SCRIPT, dir, "return")
      assert.are.same({ status = 0, out = "true|nil" }, { status = r.status, out = r.out })
    end)

    it("raising from C after the resume still crashes the installed LuaJIT", function()
      build()
      local r = luajit(dir, "", SCRIPT, dir, "raise")
      -- 139: killed by SIGSEGV. If this fails with status 0 and
      -- "false|...raised after a resume", the installed LuaJIT has the fix:
      -- update docs/benchmarks.md and the comment in bindings/lua/lcore.c.
      assert.are.same({ status = 139, out = "" }, { status = r.status, out = r.out },
        "LuaJIT #1066 no longer reproduces: " .. r.out .. r.err)
    end)
  end)
end)
