-- coserve.poll (SPEC §11): a coroutine waits on a foreign descriptor (here
-- the ends of pipes made with LuaJIT's FFI) while others keep running.
local coserve = require "coserve"
local testing = require "coserve.testing"
local ffi = require "ffi"

pcall(ffi.cdef, [[
  int pipe(int fds[2]);
  long write(int fd, const void *buf, unsigned long n);
  long read(int fd, void *buf, unsigned long n);
  int close(int fd);
  int fcntl(int fd, int cmd, ...);
]])

local run = testing.run

-- A non-blocking pipe: its read and write ends as numbers.
local function pipe()
  local fds = ffi.new("int[2]")
  assert(ffi.C.pipe(fds) == 0)
  for i = 0, 1 do ffi.C.fcntl(fds[i], 4 --[[F_SETFL]], ffi.cast("int", 2048 --[[O_NONBLOCK]])) end
  return fds[0], fds[1]
end

local function write(fd, s) return tonumber(ffi.C.write(fd, s, #s)) end
local function read(fd)
  local buf = ffi.new("char[4096]")
  local n = tonumber(ffi.C.read(fd, buf, 4096))
  return n > 0 and ffi.string(buf, n) or nil
end

describe("coserve.poll", function()
  it("parks until the descriptor is readable, while other coroutines run", function()
    run(function()
      local r, w = pipe()
      local ticks = 0
      local ticker = coserve.spawn(function()
        while ticks < 5 do coserve.sleep(0.01); ticks = ticks + 1 end
      end)
      coserve.after(0.08, function() write(w, "ready") end)
      assert.equal("r", coserve.poll(r, "r", 5))
      assert.equal("ready", read(r))
      assert.equal(5, ticks) -- the ticker ran while this coroutine waited
      assert(ticker:join(1))
      ffi.C.close(r)
      ffi.C.close(w)
    end)
  end)

  it("reports writable at once, and both when both hold", function()
    run(function()
      local r, w = pipe()
      assert.equal("w", coserve.poll(w, "w", 1))
      write(w, "x")
      assert.equal("r", coserve.poll(r, "rw", 1)) -- a read end is never writable
      ffi.C.close(r)
      ffi.C.close(w)
    end)
  end)

  it("times out with nil, 'timeout', and a canceled wait returns 'canceled'", function()
    run(function()
      local r, w = pipe()
      assert.same({ nil, "timeout" }, { coserve.poll(r, "r", 0.05) })
      local t = coserve.spawn(function() return coserve.poll(r, "r") end)
      assert.same({ nil, "busy" }, { coserve.poll(r, "r", 0.01) }) -- one wait per descriptor
      t:cancel()
      assert.same({ true, nil, "canceled" }, { t:join(1) })
      -- The descriptor can be polled again once the wait has ended.
      write(w, "y")
      assert.equal("r", coserve.poll(r, "r", 1))
      ffi.C.close(r)
      ffi.C.close(w)
    end)
  end)

  it("sees the other end closing as readable (EOF)", function()
    run(function()
      local r, w = pipe()
      coserve.after(0.02, function() ffi.C.close(w) end)
      assert.equal("r", coserve.poll(r, "r", 2))
      assert.is_nil(read(r))
      ffi.C.close(r)
    end)
  end)

  it("raises on bad arguments, naming the function", function()
    run(function()
      assert.has_error(function() coserve.poll(0, "x") end,
        [[bad argument #2 to 'poll' ("r", "w" or "rw" expected)]])
      assert.has_error(function() coserve.poll("zero", "r") end)
      local ok, err = pcall(coserve.poll, -1, "r")
      assert.is_false(ok)
      assert.matches("poll: a descriptor", err)
    end)
    assert.has_error(function() coserve.poll(0, "r") end, "poll: not inside a coserve coroutine")
  end)
end)
