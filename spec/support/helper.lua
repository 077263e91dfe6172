-- Loaded by busted before the specs (see .busted and scripts/test).
--
-- The sanitizer run starts luajit with LD_PRELOAD=libasan.so, because the
-- ASan runtime must be loaded before coserve.so. Nothing this process starts
-- needs it (the sanitizer build's coserve links it itself), and some tools
-- hang under it (pgrep deadlocked): children must not inherit it.
local ffi = require "ffi"
ffi.cdef "int unsetenv(const char *name);"
ffi.C.unsetenv("LD_PRELOAD")
