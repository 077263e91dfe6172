-- Installing coserve like a program (SPEC §12, docs/install.md): the .deb
-- scripts/package builds, installed with dpkg -i and used as a user would
-- (the command, a Lua app, plain luajit, pkg-config and a C host), then
-- removed; `cmake --install` into a prefix; `luarocks make` offline.
--
-- It builds in its own directory (build-pkgspec), holds a lock so that two
-- runs on the machine (two engineers' scripts/test) take turns, and leaves
-- the machine as it found it: the package is removed, temporary trees are
-- deleted. It runs in the normal build's pass only: the sanitizer and
-- coverage passes instrument the runtime, not the packaging.
local ffi = require "ffi"
local proc = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./")
                    .. "support/process.lua")

local ROOT = proc.ROOT
local BUILD = ROOT .. "/build-pkgspec"
local q = proc.quote

local function sh(cmd, timeout)
  return proc.run({ "bash", "-c", cmd }, { timeout = timeout or 60 })
end

local function ok(r, what)
  assert(r.status == 0, ("%s: exit %s\nstdout: %s\nstderr: %s"):format(
    what, tostring(r.status), r.out, r.err))
  return r.out
end

local function exists(path) return os.execute("test -e " .. q(path)) == 0 end

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- The project version, from the one place it is set.
local function project_version()
  local cmake = assert(proc.read(ROOT .. "/CMakeLists.txt"))
  return assert(cmake:match("project%(coserve VERSION ([%d.]+)"), "no project version")
end

local function instrumented()
  local cache = proc.read((os.getenv("COSERVE_BUILD") or "build") .. "/CMakeCache.txt") or ""
  return cache:find("COSERVE_SANITIZE:BOOL=ON", 1, true) or
         cache:find("COSERVE_COVERAGE:BOOL=ON", 1, true)
end

-- One run at a time per machine: an exclusive flock(2) held by this
-- process until teardown (the kernel drops it if the process dies).
pcall(ffi.cdef, [[
int open(const char *path, int flags, int mode);
int flock(int fd, int operation);
int close(int fd);
]])
local LOCK_PATH = "/tmp/coserve-package-spec.lock"
local function lock()
  local fd = ffi.C.open(LOCK_PATH, 66 --[[O_RDWR|O_CREAT]], 420)
  assert(fd >= 0, "cannot open " .. LOCK_PATH)
  local got = proc.poll(900, function() return ffi.C.flock(fd, 2 + 4 --[[LOCK_EX|LOCK_NB]]) == 0 end)
  if not got then ffi.C.close(fd) error("another package spec held " .. LOCK_PATH .. " for 15 minutes") end
  return fd
end

-- dpkg waits for no one: retry while another apt-get or dpkg holds its lock.
local function dpkg(args)
  local r
  proc.poll(180, function()
    r = sh("dpkg " .. args, 120)
    return r.status == 0 or not (r.err:find("lock", 1, true))
  end)
  return r
end

local function dpkg_status()
  return (sh("dpkg-query -W -f='${db:Status-Status}' coserve 2>/dev/null").out)
end

-- A C host built with `pkg-config --cflags --libs coserve` alone: it
-- registers a C function and runs a Lua string that waits on the loop.
local HOST_C = [[
#include <stdio.h>
#include <lauxlib.h>
#include "coserve.h"

static int l_twice(lua_State *L) {
  lua_pushinteger(L, 2 * luaL_checkinteger(L, 1));
  return 1;
}

int main(void) {
  cs_runtime_t *rt = cs_runtime_new();
  if (rt == NULL)
    return 1;
  lua_register(cs_runtime_lua(rt), "twice", l_twice);
  int rc = cs_runtime_run_string(rt,
      "local coserve = require 'coserve'\n"
      "coserve.sleep(0.01)\n"
      "print('host ' .. coserve.version .. ' ' .. twice(21))\n", "=host");
  if (rc < 0)
    fprintf(stderr, "host: %s\n", cs_runtime_error(rt));
  cs_runtime_free(rt);
  return rc < 0 ? 1 : 0;
}
]]

-- Compiles HOST_C in dir with pkg_config_path (nil: the system's) and runs it.
local function build_and_run_host(dir, pkg_config_path)
  proc.write(dir .. "/host.c", HOST_C)
  local env = pkg_config_path and ("PKG_CONFIG_PATH=" .. q(pkg_config_path)) or "env -u PKG_CONFIG_PATH"
  ok(sh(("cd %s && cc -Wall -Wextra -Werror -o host host.c $(%s pkg-config --cflags --libs coserve)")
    :format(q(dir), env), 120), "cc host.c")
  return ok(proc.run({ dir .. "/host" }), "host")
end

local HTTP_APP = [[
local coserve = require "coserve"
local http = require "coserve.http"
local app = http.server{ host = "127.0.0.1", port = 0 }
app:route("GET", "/hello/:name", function(req, res)
  res:send(200, { ["content-type"] = "text/plain" }, "hello " .. req.params.name .. "\n")
end)
local ok, err = true
coserve.spawn(function() ok, err = app:start() end)
assert(ok, err)
print("port " .. app.port) io.stdout:flush()
]]

local HTTP_CLIENT = [[
local http = require "coserve.http"
local res = assert(http.request{ url = "http://127.0.0.1:" .. arg[1] .. "/hello/client", timeout = 5 })
io.write(res.status, " ", res.body)
]]

describe("installing coserve", function()
  local fd, version, multiarch, skip

  setup(function()
    if instrumented() then skip = "runs in the normal build's pass only" return end
    fd = lock()
    version = project_version()
    -- Tools the spec uses beyond the build's: dpkg-shlibdeps, luarocks, man, groff.
    ok(sh(". " .. q(ROOT .. "/scripts/setup.sh") ..
          " && cs_need_packages dpkg-dev luarocks man-db groff-base curl", 600), "cs_need_packages")
    multiarch = ok(sh("dpkg-architecture -qDEB_HOST_MULTIARCH"), "dpkg-architecture"):match("%S+")
  end)

  teardown(function()
    if fd then ffi.C.close(fd) end
  end)

  describe("the .deb from scripts/package", function()
    local deb, tmp, files, preinstalled
    local root = sh("id -u").out == "0\n"

    setup(function()
      if skip then return end
      tmp = proc.tmpdir()
      -- A coserve package left by an interrupted run of this spec is
      -- removed; one from anywhere else is left alone and the cases wait.
      local status = root and dpkg_status() or ""
      if status ~= "" and status ~= "not-installed" then
        local maint = sh("dpkg-query -W -f='${Maintainer}' coserve").out
        if maint:find("coserve developers", 1, true) then
          ok(dpkg("-r coserve"), "dpkg -r (a leftover)")
        else
          preinstalled = maint
        end
      end
      local r = proc.run({ ROOT .. "/scripts/package", BUILD }, { timeout = 900 })
      deb = ok(r, "scripts/package"):match("(%S+%.deb)%s*$")
    end)

    teardown(function()
      if not skip and root and not preinstalled and dpkg_status() ~= "not-installed" and
         dpkg_status() ~= "" then
        dpkg("-r coserve")
      end
      proc.rmdir(tmp)
    end)

    local function check_ready(without_root)
      if skip then pending(skip) return false end
      if without_root then return true end
      if not root then pending("dpkg -i needs root") return false end
      if preinstalled then pending("a coserve package not built here is installed: " .. preinstalled) return false end
      return true
    end

    it("is named and versioned after CMake's project version", function()
      if not check_ready(true) then return end
      assert.truthy(deb and exists(deb), "no .deb")
      assert.equal(("coserve_%s_"):format(version), deb:match("[^/]*$"):sub(1, #version + 9))
      local fields = ok(sh("dpkg-deb -f " .. q(deb) .. " Package Version Architecture"), "dpkg-deb -f")
      assert.truthy(fields:find("Package: coserve\n", 1, true), fields)
      assert.truthy(fields:find("Version: " .. version .. "\n", 1, true), fields)
    end)

    it("declares the package of every shared library its binaries load", function()
      if not check_ready(true) then return end
      local depends = ok(sh("dpkg-deb -f " .. q(deb) .. " Depends"), "Depends")
      for _, p in ipairs{ "libc6", "libluajit2-5.1-2", "libuv1", "libssl3", "zlib1g" } do
        assert.truthy(depends:find("%f[%w]" .. p:gsub("%-", "%%-") .. "%f[^%w%.%-]"), p .. " not in " .. depends)
      end
      -- Whatever else the build links (libpq, ...): each NEEDED library of
      -- the CLI and the module, found by the dynamic linker, belongs to a
      -- package in Depends.
      ok(sh("mkdir -p " .. q(tmp .. "/x") .. " && dpkg-deb -x " .. q(deb) .. " " .. q(tmp .. "/x")), "dpkg-deb -x")
      for _, elf in ipairs{ "/usr/bin/coserve", ("/usr/lib/%s/lua/5.1/coserve.so"):format(multiarch) } do
        local needed = ok(sh("objdump -p " .. q(tmp .. "/x" .. elf) .. " | awk '/NEEDED/ {print $2}'"), "objdump")
        assert.truthy(#lines(needed) >= 3, elf .. " needs " .. needed)
        for _, lib in ipairs(lines(needed)) do
          local owner = ok(sh(("dpkg -S '*/%s' | head -1 | cut -d: -f1"):format(lib)), "dpkg -S " .. lib):match("%S+")
          assert.truthy(owner, "no package owns " .. lib)
          assert.truthy(depends:find(owner, 1, true), ("%s (%s, needed by %s) not in Depends: %s"):format(owner, lib, elf, depends))
        end
      end
    end)

    it("installs with dpkg -i: the command, the header, the library, coserve.pc, the Lua module, the man page", function()
      if not check_ready() then return end
      ok(dpkg("-i " .. q(deb)), "dpkg -i")
      assert.equal("installed", dpkg_status())
      files = {
        "/usr/bin/coserve",
        "/usr/include/coserve.h",
        ("/usr/lib/%s/libcoserve.a"):format(multiarch),
        ("/usr/lib/%s/pkgconfig/coserve.pc"):format(multiarch),
        ("/usr/lib/%s/lua/5.1/coserve.so"):format(multiarch),
        "/usr/share/man/man1/coserve.1.gz",
      }
      local listed = ok(sh("dpkg -L coserve"), "dpkg -L")
      for _, f in ipairs(files) do
        assert.truthy(listed:find("\n" .. f .. "\n", 1, true) or listed:find("^" .. f .. "\n"), f .. " not in dpkg -L")
        assert.truthy(exists(f), f .. " missing")
      end
      ok(sh("dpkg -V coserve"), "dpkg -V (md5sums)")
    end)

    it("/usr/bin/coserve --version reports the project version", function()
      if not check_ready() then return end
      local out = ok(proc.run({ "/usr/bin/coserve", "--version" }), "coserve --version")
      assert.truthy(out:find("^coserve " .. version:gsub("%.", "%%.") .. " %(LuaJIT [%d.]+[^,]*, libuv [%d.]+%)\n$"), out)
    end)

    it("runs an HTTP app; curl and a coserve client get its answer", function()
      if not check_ready() then return end
      local app = proc.write(tmp .. "/app.lua", HTTP_APP)
      local p = proc.start({ "/usr/bin/coserve", app })
      finally(function() p:stop() end)
      local port = p:wait_output("port (%d+)\n")
      local r = proc.run({ "curl", "-sS", "--max-time", "5", "http://127.0.0.1:" .. port .. "/hello/deb" })
      assert.equal("hello deb\n", ok(r, "curl"))
      r = proc.run({ "/usr/bin/coserve", "-e", HTTP_CLIENT, port })
      assert.equal("200 hello client\n", ok(r, "coserve client"))
      p:signal("TERM")
      assert.equal(0, p:wait_exit(5))
    end)

    it("plain luajit finds the installed module on its default cpath", function()
      if not check_ready() then return end
      local r = sh([[cd / && env -u LUA_PATH -u LUA_CPATH -u LUA_INIT luajit -e '
        local coserve = require "coserve"
        coserve.run(function() coserve.sleep(0.01) end)
        io.write(package.searchpath("coserve", package.cpath), " ", coserve.version, "\n")']])
      assert.equal(("/usr/lib/%s/lua/5.1/coserve.so %s\n"):format(multiarch, version), ok(r, "luajit"))
    end)

    it("pkg-config --libs coserve links a C host against the installed header and libcoserve.a", function()
      if not check_ready() then return end
      local libs = ok(sh("env -u PKG_CONFIG_PATH pkg-config --libs coserve"), "pkg-config --libs")
      for _, l in ipairs{ "-lcoserve", "-lluajit-5.1", "-luv", "-lssl", "-lcrypto", "-lz" } do
        assert.truthy((" " .. libs):find(" " .. l:gsub("%-", "%%-") .. "%f[%s]"), l .. " not in " .. libs)
      end
      local cflags = ok(sh("env -u PKG_CONFIG_PATH pkg-config --cflags coserve"), "pkg-config --cflags")
      assert.truthy(cflags:find("luajit-2.1", 1, true), cflags)
      assert.equal(("host %s 42\n"):format(version), build_and_run_host(tmp))
    end)

    it("man coserve shows the page", function()
      if not check_ready() then return end
      assert.equal("/usr/share/man/man1/coserve.1.gz\n", ok(sh("man -w coserve"), "man -w"))
      local page = ok(sh("MANWIDTH=200 man coserve 2>&1 | col -b"), "man")
      for _, s in ipairs{ "COSERVE(1)", "SYNOPSIS", "SIGHUP", "SIGUSR1", "EXIT STATUS",
                          "COSERVE_WORKER", "LISTEN_FDS", "SEE ALSO", "coserve " .. version } do
        assert.truthy(page:find(s, 1, true), s .. " not in the man page")
      end
      -- Every option --help lists has its entry: the page follows main.c.
      local help = ok(proc.run({ "/usr/bin/coserve", "--help" }), "coserve --help")
      local n = 0
      for opt in help:gmatch("%-%-[%a][%w-]*") do
        n = n + 1
        assert.truthy(page:find("\n       " .. opt, 1, true) or page:find(", " .. opt .. " ", 1, true) or
                      page:find(", " .. opt .. "\n", 1, true),
                      opt .. " (in --help) has no entry in the man page")
      end
      assert.truthy(n >= 9, help)
    end)

    it("dpkg -r removes every file it installed", function()
      if not check_ready() then return end
      assert.truthy(files, "the install case did not run")
      ok(dpkg("-r coserve"), "dpkg -r")
      local status = dpkg_status()
      assert.truthy(status == "not-installed" or status == "", status)
      for _, f in ipairs(files) do assert.falsy(exists(f), f .. " left behind") end
      assert.falsy(exists(("/usr/lib/%s/lua/5.1/coserve.so"):format(multiarch)))
      local r = sh("cd / && env -u LUA_CPATH luajit -e 'require \"coserve\"'")
      assert.are_not.equal(0, r.status)
    end)
  end)

  describe("cmake --install --prefix", function()
    local prefix

    before_each(function() prefix = proc.tmpdir() end)
    after_each(function() proc.rmdir(prefix) end)

    it("puts exactly the six files under the prefix, and coserve.pc works from there", function()
      if skip then pending(skip) return end
      -- build-pkgspec was configured for /usr by the .deb's build (above).
      if not exists(BUILD .. "/CMakeCache.txt") then
        ok(proc.run({ ROOT .. "/scripts/package", BUILD }, { timeout = 900 }), "scripts/package")
      end
      ok(proc.run({ "cmake", "--install", BUILD, "--prefix", prefix }, { timeout = 60 }), "cmake --install")
      local found = ok(sh("cd " .. q(prefix) .. " && find . -type f | sort"), "find")
      local want = {
        "./bin/coserve",
        "./include/coserve.h",
        ("./lib/%s/libcoserve.a"):format(multiarch),
        ("./lib/%s/lua/5.1/coserve.so"):format(multiarch),
        ("./lib/%s/pkgconfig/coserve.pc"):format(multiarch),
        "./share/man/man1/coserve.1",
      }
      table.sort(want)
      assert.same(want, lines(found))
      -- The .pc file finds the prefix relative to where it is.
      local pcdir = ("%s/lib/%s/pkgconfig"):format(prefix, multiarch)
      local inc = ok(sh("PKG_CONFIG_PATH=" .. q(pcdir) .. " pkg-config --variable=includedir coserve"), "includedir")
      assert.equal(prefix .. "/include", (ok(sh("realpath " .. q(inc:match("%S+"))), "realpath"):match("%S+")))
      assert.equal(("host %s 42\n"):format(version), build_and_run_host(prefix, pcdir))
      -- Requires follows what libcoserve.a links.
      local requires = ok(sh("PKG_CONFIG_PATH=" .. q(pcdir) .. " pkg-config --print-requires coserve"), "requires")
      for _, m in ipairs{ "luajit", "libuv", "openssl", "zlib" } do
        assert.truthy(requires:find("%f[%w]" .. m .. "%f[^%w]"), m .. " not in " .. requires)
      end
      -- The man page renders without a groff warning.
      local r = sh("groff -man -ww -z " .. q(prefix .. "/share/man/man1/coserve.1") .. " 2>&1")
      assert.equal("", ok(r, "groff"))
    end)
  end)

  describe("luarocks make with coserve-scm-1.rockspec", function()
    local tmp

    before_each(function() tmp = proc.tmpdir() end)
    after_each(function() proc.rmdir(tmp) end)

    it("builds offline into a tree: the module for plain luajit and the command, no C API files", function()
      if skip then pending(skip) return end
      -- luarocks builds in ./build.luarocks: work on a copy of the checkout.
      -- HOME is the temporary directory so that its cache goes there too.
      local src = tmp .. "/src"
      ok(sh(("mkdir -p %s && cd %s && git ls-files -z -co --exclude-standard |" ..
             " tar --null -T - --ignore-failed-read -cf - | tar -xf - -C %s")
        :format(q(src), q(ROOT), q(src)), 120), "copy the checkout")
      local tree = tmp .. "/tree"
      local r = sh(("cd %s && HOME=%s luarocks --lua-version 5.1 --tree %s make coserve-scm-1.rockspec")
        :format(q(src), q(tmp), q(tree)), 900)
      ok(r, "luarocks make")
      local list = ok(sh(("HOME=%s luarocks --lua-version 5.1 --tree %s list --porcelain"):format(q(tmp), q(tree))), "luarocks list")
      assert.truthy(list:find("^coserve\tscm%-1\tinstalled"), list)
      local module = tree .. "/lib/lua/5.1/coserve.so"
      assert.truthy(exists(module), "no " .. module)
      local r2 = sh(("cd / && LUA_CPATH=%s luajit -e 'local c = require \"coserve\" io.write(package.searchpath(\"coserve\", package.cpath), \" \", c.version, \"\\n\")'")
        :format(q(tree .. "/lib/lua/5.1/?.so")))
      assert.equal(module .. " " .. version .. "\n", ok(r2, "luajit"))
      local out = ok(proc.run({ tree .. "/bin/coserve", "--version" }), "coserve --version")
      assert.truthy(out:find("coserve " .. version, 1, true), out)
      -- The C API stays out of a Lua tree.
      local stray = ok(sh("cd " .. q(tree) .. " && find . -name 'libcoserve.a' -o -name 'coserve.pc' -o -name 'coserve.h'"), "find")
      assert.equal("", stray)
    end)
  end)
end)
