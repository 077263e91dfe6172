-- coserve.so's entry points (issue 9, coverage): plain LuaJIT may require
-- any of the built-in modules first, before "coserve" itself.
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

describe("coserve.so entry points", function()
  for _, case in ipairs({
    { "coserve.testing", "run" }, { "coserve.http", "server" }, { "coserve.websocket", "new" },
  }) do
    local name, field = case[1], case[2]
    it(("require %q first loads it from coserve.so"):format(name), function()
      local code = ([[
        package.path = ""
        package.cpath = %q
        local m = require %q
        print(type(m), type(m[%q]))
      ]]):format(proc.BUILD .. "/lua/?.so", name, field)
      local r = proc.run(proc.luajit("-e", code))
      assert.equal(0, r.status, r.err)
      assert.equal("table\tfunction\n", r.out)
    end)
  end
end)
