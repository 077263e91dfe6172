-- wrk script for scripts/bench http: only a done() hook, so wrk keeps its
-- fast path (a script that defines request() or response() would run Lua
-- per request). Prints one machine-readable line after wrk's own report:
--   requests=… duration_us=… bytes=… rps=… p50_us=… p90_us=… p99_us=…
--   max_us=… connect_errors=… read_errors=… write_errors=… status_errors=…
--   timeouts=…
-- status_errors counts responses with a status of 400 or more ("Non-2xx or
-- 3xx responses" in wrk's report).
done = function(summary, latency, requests)
  local e = summary.errors
  local function us(p) return math.floor(latency:percentile(p) + 0.5) end
  io.write(string.format(
    "requests=%d duration_us=%d bytes=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d "
      .. "connect_errors=%d read_errors=%d write_errors=%d status_errors=%d timeouts=%d\n",
    summary.requests, summary.duration, summary.bytes,
    summary.requests / (summary.duration / 1e6),
    us(50), us(90), us(99), math.floor(latency.max + 0.5),
    e.connect, e.read, e.write, e.status, e.timeout))
end
