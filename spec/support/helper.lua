-- Loaded by busted before the specs (see .busted and scripts/test).
--
-- The sanitizer run starts luajit with LD_PRELOAD=libasan.so, because the
-- ASan runtime must be loaded before coserve.so. Nothing this process starts
-- needs it (the sanitizer build's coserve links it itself), and some tools
-- hang under it (pgrep deadlocked): children must not inherit it. A child
-- that is itself luajit loading the sanitizer build's coserve.so does need
-- it: it is kept in COSERVE_LUAJIT_PRELOAD for proc.luajit().
local ffi = require "ffi"
ffi.cdef [[
  int unsetenv(const char *name);
  int setenv(const char *name, const char *value, int overwrite);
]]
local preload = os.getenv("LD_PRELOAD")
if preload and preload ~= "" then ffi.C.setenv("COSERVE_LUAJIT_PRELOAD", preload, 1) end
ffi.C.unsetenv("LD_PRELOAD")
