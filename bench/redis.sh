# shellcheck shell=bash disable=SC2034  # globals read by scripts/bench (run_rounds, reports)
# bench/redis.sh -- `scripts/bench redis`, sourced by scripts/bench (it uses
# its helpers: start_server, wait_quiet, run_rounds, setup_nginx_lua, ...).
#
# The same nginx.redis code (bench/redis_calls.lua: Debian's lua-nginx-redis,
# a pooled connection, SET then GET per request) behind an HTTP endpoint in
# nginx + ngx_lua (content_by_lua) and in coserve.http + coserve.ngx
# (bench/redis_coserve.lua), each driven by wrk -c$REDIS_CONNS keep-alive
# (REDIS_CONNS concurrent requests, so as many handler coroutines talking to
# Redis at once). One redis-server, started here on a loopback port, pinned
# to CPU 1 with wrk and stopped by PID; the server on CPU 0. Metric: Redis
# round trips (2 per request) per busy server core-second. The ceiling:
# redis-benchmark -c REDIS_CONNS -t get,set (C), on CPU 0 in the server's place.
#
# Environment (besides scripts/bench's BENCH_SECONDS, BENCH_WARMUP,
# BENCH_ROUNDS, BENCH_QUIET_WAIT, BENCH_COSERVE):
#   REDIS_CONNS=100          wrk connections (concurrent requests)
#   REDIS_BENCH_N=200000     redis-benchmark requests per test (0: skip it)

REDIS_CONNS=${REDIS_CONNS:-100}
REDIS_BENCH_N=${REDIS_BENCH_N:-200000}
REDIS_DIR=$OUT/redis
REDIS_PORT=""
REDIS_PID=""

redis_nginx_conf() { # port -> the config's path
    local port=$1 dir=$ROOT/$REDIS_DIR/nginx lua_root=$ROOT/$NGX_LUA_DIR/root
    mkdir -p "$dir/tmp"
    {
        nginx_conf_head "$dir" 1
        cat <<CONF
    lua_package_path "$ROOT/bench/?.lua;$lua_root/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?.lua;;";
    server {
        listen 127.0.0.1:$port;
        location = / {
            default_type text/plain;
            content_by_lua_block {
                local value, err = require("redis_calls")($REDIS_PORT)
                if not value then
                    ngx.status = 502
                    ngx.print(err)
                    return
                end
                ngx.header.content_length = #value
                ngx.print(value)
            }
        }
    }
}
CONF
    } >"$dir/nginx.conf"
    echo "$dir/nginx.conf"
}

redis_argv() { # server port -> ARGV
    local s=$1 port=$2 conf
    case $s in
    coserve) ARGV=("$COSERVE_BIN" bench/redis_coserve.lua "$port" "$REDIS_PORT") ;;
    nginx)
        conf=$(redis_nginx_conf "$port")
        ARGV=(env "LD_LIBRARY_PATH=$NGX_LUA_LIBDIR"
            nginx -p "$(dirname "$conf")/" -e "$(dirname "$conf")/error.log" -c "$conf") ;;
    esac
}

# redis-server on CPU 1 (with the load generator), nothing saved to disk.
start_redis() {
    local i
    REDIS_PORT=$(free_port)
    ( exec taskset -c "$CLIENT_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
        --appendonly no --daemonize no --maxclients 10000 --dir "$ROOT/$REDIS_DIR" ) >"$REDIS_DIR/redis.log" 2>&1 &
    REDIS_PID=$!
    SERVER_PIDS+=("$REDIS_PID")
    for ((i = 0; i < 100; i++)); do
        is_listening "$REDIS_PORT" && return 0
        sleep 0.05
    done
    die "redis-server did not listen on 127.0.0.1:$REDIS_PORT (see $REDIS_DIR/redis.log)"
}

# redis_run SERVER CONNS: one measured wrk run against a fresh server.
redis_run() {
    local s=$1 c=$2 port bg line n url
    port=$(free_port)
    redis_argv "$s" "$port"
    start_server "redis-$s" "$port" "${ARGV[@]}" || die "${NAME[$s]} failed to start"
    bg=$(wait_quiet)
    BG_MAX=$(awk -v a="$BG_MAX" -v b="$bg" 'BEGIN { print (b > a ? b : a) }')
    url="http://127.0.0.1:$port/"
    log "${NAME[$s]}: wrk -t1 -c$c, ${BENCH_WARMUP}s warm-up + ${BENCH_SECONDS}s (2 Redis round trips a request)"
    if awk -v w="$BENCH_WARMUP" 'BEGIN { exit !(w > 0) }'; then
        run_client $((${BENCH_WARMUP%.*} + 30)) wrk -t1 -c"$c" -d"${BENCH_WARMUP}s" "$url" >>"$LOG" 2>&1 || true
    fi
    echo "== redis $s c=$c measured" >>"$LOG"
    busy_measure run_client $((${BENCH_SECONDS%.*} + 30)) wrk -t1 -c"$c" -d"${BENCH_SECONDS}s" \
        --timeout 5s -s bench/http_wrk.lua "$url"
    printf '%s\n' "$MEASURED_OUT" >>"$LOG"
    line=$(grep '^requests=' <<<"$MEASURED_OUT" || true)
    stop_server "$SERVER_PID"
    [[ -n $line ]] || die "wrk produced no result for ${NAME[$s]} (see $LOG)"
    n=$(kv "$line" requests)
    R[$s,$c,rps]=$(kv "$line" rps)
    R[$s,$c,p99_us]=$(kv "$line" p99_us)
    R[$s,$c,errors]=$(($(kv "$line" connect_errors) + $(kv "$line" read_errors) + $(kv "$line" write_errors) +
        $(kv "$line" timeouts) + $(kv "$line" status_errors)))
    R[$s,$c,rt_s]=$(awk -v r="${R[$s,$c,rps]}" 'BEGIN { printf "%.0f", 2 * r }')
    R[$s,$c,metric]=$(awk -v n="$n" -v t="$BUSY_S" 'BEGIN { if (t > 0) printf "%.0f", 2 * n / t; else print "n/a" }')
    R[$s,$c,pcs]=$(per_cpu "${R[$s,$c,rt_s]}" "$SRV")
    R[$s,$c,cpu_busy]=$BUSY0
    R[$s,$c,cli_busy]=$BUSY1
    R[$s,$c,srv_cpu]=$SRV
    echo "redis $s c=$c bg_busy=$bg $line cpu_busy=$BUSY0 cli_busy=$BUSY1 srv_cpu=$SRV busy_s=$BUSY_S metric=${R[$s,$c,metric]}" >>"$LOG"
    log "  -> ${R[$s,$c,rps]} req/s, ${R[$s,$c,metric]} Redis round trips per busy core-s (CPU $SERVER_CPU busy $BUSY0, CPU $CLIENT_CPU busy $BUSY1, errors ${R[$s,$c,errors]})"
}

# The ceiling: redis-benchmark (C) in the server's place on CPU 0.
redis_ceiling() {
    local t rps
    for t in set get; do
        wait_quiet >/dev/null
        SERVER_PID=0
        busy_measure timeout 120 taskset -c "$SERVER_CPU" redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" \
            -c "$REDIS_CONNS" -n "$REDIS_BENCH_N" -t "$t" -q --csv
        echo "redis-benchmark $t: $MEASURED_OUT cpu0_busy=$BUSY0 cpu1_busy=$BUSY1 busy_s=$BUSY_S" >>"$LOG"
        rps=$(tail -n 1 <<<"$MEASURED_OUT" | awk -F'"' '{ print $4 }')
        R[rb,$t,rps]=${rps:-n/a}
        R[rb,$t,metric]=$(awk -v n="$REDIS_BENCH_N" -v t="$BUSY_S" 'BEGIN { if (t > 0) printf "%.0f", n / t; else print "n/a" }')
        R[rb,$t,cpu_busy]=$BUSY0
        R[rb,$t,cli_busy]=$BUSY1
        log "redis-benchmark -c $REDIS_CONNS -t $t: ${R[rb,$t,rps]} req/s, ${R[rb,$t,metric]} per busy CPU $SERVER_CPU second"
    done
}

redis_main() {
    LOG="$OUT/last-redis-run.log"
    : >"$LOG"
    mkdir -p "$REDIS_DIR"
    ensure_packages wrk redis-server redis-tools lua-nginx-redis libpcre3
    install_nginx
    setup_nginx_lua
    [[ -z $NGX_LUA_WHY ]] || die "nginx + Lua cannot run: $NGX_LUA_WHY"
    build_coserve
    [[ -z $COSERVE_WHY ]] || die "coserve cannot run: $COSERVE_WHY"
    start_redis

    declare -gA NAME R
    NAME[nginx]="nginx + ngx_lua"
    NAME[coserve]="coserve + coserve.ngx"
    SERVERS=(nginx coserve)
    local s port out
    for s in "${SERVERS[@]}"; do
        port=$(free_port)
        redis_argv "$s" "$port"
        echo "== smoke $s: ${ARGV[*]}" >>"$LOG"
        start_server "redis-$s" "$port" "${ARGV[@]}" || die "${NAME[$s]} did not listen (see $OUT/redis-$s.server.log)"
        out=$(timeout 10 curl -s "http://127.0.0.1:$port/" 2>>"$LOG" || true)
        echo "smoke $s: '$out'" >>"$LOG"
        [[ $out == "Hello, World!" ]] || die "${NAME[$s]}: wrong answer '$out' (see $LOG)"
        if [[ $s == nginx ]] && ! maps_luajit "$SERVER_PID" "$NGX_LUA_LIBDIR"; then
            die "nginx did not map the unpacked OpenResty LuaJIT"
        fi
        stop_server "$SERVER_PID"
    done
    COSERVE_OK=1

    BG_MAX=0
    ROUND_KEYS="rps rt_s p99_us metric pcs cpu_busy cli_busy srv_cpu errors"
    ROUND_METRIC=metric
    ROUND_ERRORS=errors
    local saved_conns=$BENCH_CONNS
    BENCH_CONNS=$REDIS_CONNS
    run_rounds redis_run "$BENCH_ROUNDS"
    if ((REDIS_BENCH_N > 0)); then redis_ceiling; fi
    redis_report
    BENCH_CONNS=$saved_conns
    stop_server "$REDIS_PID"
}

redis_report() {
    local c=$REDIS_CONNS cpu_model bt by med byp medp s
    cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    bt=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$(dirname "$COSERVE_BIN")/CMakeCache.txt" 2>/dev/null || true)
    echo
    echo "== scripts/bench redis: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs ($cpu_model), kernel $(uname -r)"
    echo "   redis-server $(dpkg-query -W -f='${Version}' redis-server 2>/dev/null || echo '?') on CPU $CLIENT_CPU (with wrk), lua-nginx-redis $(dpkg-query -W -f='${Version}' lua-nginx-redis 2>/dev/null || echo '?'), nginx $(dpkg-query -W -f='${Version}' nginx 2>/dev/null || echo '?'), wrk -t1 -c$c keep-alive, ${BENCH_WARMUP}s warm-up + ${BENCH_SECONDS}s"
    echo "   coserve: $COSERVE_BIN bench/redis_coserve.lua (CMake build type: ${bt:-unknown}); both run bench/redis_calls.lua (SET + GET, pooled)"
    ((BENCH_ROUNDS > 1)) && echo "   each row: the median of $BENCH_ROUNDS interleaved rounds; the target: the median of the rounds' ratios (all runs in $LOG)"
    echo "   CPU $SERVER_CPU background load before runs (server idle, 0.5 s): at most $(hpct "$BG_MAX")"
    echo
    by=$(round_ratios "$c" coserve nginx metric)
    byp=$(round_ratios "$c" coserve nginx pcs)
    # shellcheck disable=SC2086
    med=$(median $by)
    # shellcheck disable=SC2086
    medp=$(median $byp)
    echo "| metric ($c concurrent requests) | nginx + ngx_lua | coserve + coserve.ngx | coserve / nginx (median of rounds) | by round |"
    echo "| --- | ---: | ---: | ---: | --- |"
    echo "| Redis round trips per busy server core-second | $(hval "nginx,$c,metric") | $(hval "coserve,$c,metric") | $med ($(target "$med" 1.0)) | $by |"
    echo "| Redis round trips per server process CPU second | $(hval "nginx,$c,pcs") | $(hval "coserve,$c,pcs") | $medp | $byp |"
    echo "| HTTP requests/s (2 round trips each) | $(hval "nginx,$c,rps") | $(hval "coserve,$c,rps") | | |"
    echo "| p99 latency µs | $(hval "nginx,$c,p99_us") | $(hval "coserve,$c,p99_us") | | |"
    echo "| CPU $SERVER_CPU busy / server process / CPU $CLIENT_CPU busy | $(hpct "$(hval "nginx,$c,cpu_busy")") / $(hpct "$(hval "nginx,$c,srv_cpu")") / $(hpct "$(hval "nginx,$c,cli_busy")") | $(hpct "$(hval "coserve,$c,cpu_busy")") / $(hpct "$(hval "coserve,$c,srv_cpu")") / $(hpct "$(hval "coserve,$c,cli_busy")") | | |"
    echo "| errors (all rounds) | $(hval "nginx,$c,errors") | $(hval "coserve,$c,errors") | | |"
    if ((REDIS_BENCH_N > 0)); then
        echo
        echo "| ceiling: redis-benchmark -c $c -n $REDIS_BENCH_N (C, on CPU $SERVER_CPU) | requests/s | per busy CPU $SERVER_CPU second | CPU $SERVER_CPU busy | CPU $CLIENT_CPU busy (redis-server) |"
        echo "| --- | ---: | ---: | ---: | ---: |"
        for s in set get; do
            echo "| $s | $(hval "rb,$s,rps") | $(hval "rb,$s,metric") | $(hpct "$(hval "rb,$s,cpu_busy")") | $(hpct "$(hval "rb,$s,cli_busy")") |"
        done
    fi
    log "raw results: $LOG"
}
