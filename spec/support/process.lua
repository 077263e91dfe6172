-- Child processes for the CLI and example specs: run the built binaries as
-- a user would, recorded by PID, stopped by PID, every wait bounded.
--
--   local proc = dofile("spec/support/process.lua")
--   local r = proc.run({ proc.BIN, "--version" })   -- {status, out, err}
--   local p = proc.start({ proc.BIN, "app.lua", "0" })
--   finally(function() p:stop() end)
--   local port = p:wait_output("on 127%.0%.0%.1:(%d+)")
--
-- Waits poll with coserve.sleep inside a coserve coroutine (so the
-- spec's own clients keep running) and with the sleep command outside.
local core = require "coserve.core"

local M = {}

M.BIN = os.getenv("COSERVE_BIN") or "build/coserve"
M.BUILD = os.getenv("COSERVE_BUILD") or "build"
-- The repository root, from where this file is: spec/support/process.lua.
M.ROOT = (debug.getinfo(1, "S").source:match("^@(.*)/spec/support/[^/]*$")) or "."

-- The PIDs of pid's children (a master's workers), as pgrep lists them.
function M.children(pid)
  local f = io.popen("pgrep -P " .. pid)
  local list = {}
  for line in f:lines() do list[#list + 1] = tonumber(line) end
  f:close()
  return list
end

-- A TCP port that was free a moment ago, for a child process to bind.
function M.free_port()
  local testing = require "coserve.testing"
  local port
  testing.run(function()
    local s = testing.server(function() end)
    port = s.port
    s:shutdown()
  end)
  return port
end

-- The argv of a luajit child that loads the coserve.so under test, args
-- appended: under the sanitizer build it gets the ASan runtime preloaded,
-- as the spec runner itself had (spec/support/helper.lua).
function M.luajit(...)
  local argv = {}
  local preload = os.getenv("COSERVE_LUAJIT_PRELOAD")
  if preload then argv = { "env", "LD_PRELOAD=" .. preload } end
  argv[#argv + 1] = "luajit"
  for i = 1, select("#", ...) do argv[#argv + 1] = select(i, ...) end
  return argv
end

-- Single-quotes s for sh.
function M.quote(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end

local function command(argv)
  local parts = {}
  for i = 1, #argv do parts[i] = M.quote(argv[i]) end
  return table.concat(parts, " ")
end

function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function M.write(path, content)
  local f = assert(io.open(path, "wb"))
  f:write(content)
  f:close()
  return path
end

-- A fresh directory for one case's files; remove it with M.rmdir.
function M.tmpdir()
  local path = os.tmpname()
  os.remove(path)
  assert(os.execute("mkdir -m 700 " .. M.quote(path)) == 0, "mkdir " .. path)
  return path
end

function M.rmdir(path)
  if path and path:match("^/tmp/") then os.execute("rm -rf " .. M.quote(path)) end
end

function M.sleep(s)
  if core.current() then
    core.sleep(s)
  else
    os.execute("sleep " .. s)
  end
end

-- Polls fn() every 20 ms until it returns a true value, for at most limit
-- seconds; returns what fn returned last.
function M.poll(limit, fn)
  local deadline = core.now() + limit
  while true do
    local r = { fn() }
    if r[1] or core.now() >= deadline then return unpack(r) end
    M.sleep(0.02)
  end
end

-- Runs argv to completion (killed after opts.timeout seconds, default 10)
-- with stdin from /dev/null: {status =, out =, err =}. status is 137 when
-- it had to be killed.
function M.run(argv, opts)
  opts = opts or {}
  local dir = M.tmpdir()
  local out, err, st = dir .. "/out", dir .. "/err", dir .. "/status"
  os.execute(("timeout -s KILL %g %s >%s 2>%s </dev/null; echo $? >%s")
    :format(opts.timeout or 10, command(argv), M.quote(out), M.quote(err), M.quote(st)))
  local r = { status = tonumber(M.read(st)), out = M.read(out) or "", err = M.read(err) or "" }
  M.rmdir(dir)
  return r
end

local Proc = {}
Proc.__index = Proc

-- This process's PID: a started child is killed if its spec runner dies
-- before it could stop it (a crash skips every finally).
local OWNER = tonumber((M.read("/proc/self/stat") or ""):match("^(%d+)"))

-- A started child leads a process group of its own when setsid exists, so
-- that stopping it also stops what it started (COSERVE_BIN may be a wrapper
-- script). In a background job setsid needs no fork: the PID stays the same.
local SETSID = os.execute("command -v setsid >/dev/null 2>&1") == 0 and "setsid " or ""
local function kill_cmd(sig, pid)
  local target = SETSID ~= "" and ("-" .. pid) or tostring(pid)
  return ("kill -%s %s 2>/dev/null"):format(sig, target)
end

-- Starts argv in the background: returns a process object once its PID is
-- known. Its stdout and stderr go to files (p.out, p.err); when it exits,
-- a wrapper shell records the exit status.
function M.start(argv)
  local dir = M.tmpdir()
  local p = setmetatable({ dir = dir, out = dir .. "/out", err = dir .. "/err",
                           status_file = dir .. "/status", argv = argv }, Proc)
  local watchdog = OWNER and ([[
(while kill -0 $child 2>/dev/null; do
   kill -0 %d 2>/dev/null || { %s; break; }; sleep 1
 done) &]]):format(OWNER, kill_cmd("KILL", "$child")) or ""
  os.execute(([[
(%s%s >%s 2>%s </dev/null & child=$!; echo $child >%s
 %s
 wait $child; echo $? >%s) >/dev/null 2>&1 &]])
    :format(SETSID, command(argv), M.quote(p.out), M.quote(p.err), M.quote(dir .. "/pid"),
            watchdog, M.quote(p.status_file)))
  p.pid = M.poll(5, function()
    return tonumber((M.read(dir .. "/pid") or ""):match("^(%d+)\n"))
  end)
  assert(p.pid, "no PID for " .. command(argv))
  return p
end

function Proc:stdout() return M.read(self.out) or "" end
function Proc:stderr() return M.read(self.err) or "" end

-- The exit status once the process has ended, else nil.
function Proc:status()
  return tonumber((M.read(self.status_file) or ""):match("^(%d+)\n"))
end

-- Waits (at most limit seconds, default 5) for stdout to match pattern:
-- returns the captures, or raises with what the process printed.
-- Whether stderr holds pattern at least n times within limit seconds
-- (default 5): each worker's "listening", each reload's "ready".
function Proc:wait_count(pattern, n, limit)
  return M.poll(limit or 5, function()
    local _, count = self:stderr():gsub(pattern, "")
    return count >= n
  end) and true or false
end

function Proc:wait_output(pattern, limit)
  local r = { M.poll(limit or 5, function() return self:stdout():match(pattern) end) }
  if r[1] == nil then
    error(("no %q on stdout of %s (status %s)\nstdout: %s\nstderr: %s"):format(
      pattern, command(self.argv), tostring(self:status()), self:stdout(), self:stderr()), 2)
  end
  return unpack(r)
end

-- Sends signal `name` ("TERM", "INT", ...) to the process, by its PID.
function Proc:signal(name)
  if not self:status() then
    os.execute(("kill -%s %d 2>/dev/null"):format(name, self.pid))
  end
end

-- Waits (at most limit seconds, default 5) for the exit: the status, or
-- nil if it is still running.
function Proc:wait_exit(limit)
  return M.poll(limit or 5, function() return self:status() end)
end

-- Kills the process if it is still running and removes its files. Safe to
-- call twice; meant for busted's finally().
function Proc:stop()
  if self.stopped then return end
  self.stopped = true
  if not self:status() then
    os.execute(kill_cmd("KILL", self.pid))
    self:wait_exit(5)
  end
  M.rmdir(self.dir)
end

return M
