# shellcheck shell=bash disable=SC2034  # globals read by scripts/bench (run_rounds, reports)
# bench/tls.sh -- `scripts/bench tls`, sourced by scripts/bench (it uses its
# helpers: start_server, wait_quiet, run_rounds, setup_nginx_lua, ...).
#
# coserve (bench/https_coserve.lua) vs nginx's ssl module + ngx_lua, both on
# the same ECDSA P-256 certificate, TLS 1.3 only, one process pinned to CPU 0;
# the clients on CPU 1. Cases (TLS_CASES, each a "connection count" of
# run_rounds):
#   hs       full handshakes: bench/tls_handshakes.lua (a coserve client,
#            which never resumes a session), TLS_HS_CONNS connections each
#            looping connect + handshake, GET / "Connection: close", read,
#            close -> handshakes per busy server core-second
#   hsr      the same with wrk -H "Connection: close": wrk offers the session
#            ticket of its last connection, so these are (nearly all)
#            resumed handshakes (PSK + X25519, no certificate signature)
#   ka100    keep-alive "Hello, World!" over TLS, wrk -c100 (and ka1000: 1000)
#            -> requests per busy core-second; nginx answers with
#            content_by_lua (nginx + ngx_lua, as in `scripts/bench http`)
#   bulk     one TLS connection downloads TLS_BULK_BYTES (1 GiB): curl -k -o
#            /dev/null; nginx serves a file on tmpfs, coserve the same bytes
#            from memory with res:write in 256 KiB pieces -> MB per busy
#            core-second
# and, once per server, idle memory: TLS_IDLE_CONNS (5000) connections that
# finished their handshake and sent nothing (bench/tls_idle.lua, a coserve
# client), the server's VmRSS growth per connection.
#
# Environment (besides scripts/bench's BENCH_SECONDS, BENCH_WARMUP,
# BENCH_ROUNDS, BENCH_QUIET_WAIT, BENCH_COSERVE):
#   TLS_CASES="hs hsr ka100 ka1000 bulk"   the cases measured
#   TLS_HS_CONNS=50                    client connections for hs and hsr
#   TLS_BULK_BYTES=1073741824          bytes of the bulk download
#   TLS_IDLE_CONNS=5000                idle connections (0: skip)

TLS_CASES=${TLS_CASES:-"hs hsr ka100 ka1000 bulk"}
TLS_HS_CONNS=${TLS_HS_CONNS:-50}
TLS_BULK_BYTES=${TLS_BULK_BYTES:-1073741824}
TLS_IDLE_CONNS=${TLS_IDLE_CONNS:-5000}
TLS_DIR=$OUT/tls                 # the certificate, the nginx config, logs
TLS_BULK_DIR=""                  # tmpfs folder holding nginx's bulk file

tls_cleanup() {
    cleanup
    if [[ -n $TLS_BULK_DIR ]]; then rm -rf "$TLS_BULK_DIR"; fi
}

# An ECDSA P-256 self-signed certificate for localhost / 127.0.0.1.
tls_make_cert() {
    [[ -s $TLS_DIR/cert.pem && -s $TLS_DIR/key.pem ]] && return 0
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" -days 3650 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 >>"$LOG" 2>&1 ||
        die "openssl could not make the certificate (see $LOG)"
}

# nginx: one worker, no master, ssl on the same certificate, TLS 1.3 only;
# GET / by content_by_lua, GET /bulk the tmpfs file. Otherwise nginx's
# defaults (ssl_buffer_size 16k, tickets on, no session cache).
tls_nginx_conf() { # port -> the config's path
    local port=$1 dir=$ROOT/$TLS_DIR/nginx lua_root=$ROOT/$NGX_LUA_DIR/root
    mkdir -p "$dir/tmp"
    {
        nginx_conf_head "$dir" 1
        cat <<CONF
    lua_package_path "$lua_root/usr/share/lua/5.1/?.lua;;";
    server {
        listen 127.0.0.1:$port ssl;
        ssl_certificate $ROOT/$TLS_DIR/cert.pem;
        ssl_certificate_key $ROOT/$TLS_DIR/key.pem;
        ssl_protocols TLSv1.3;
        location = / {
            default_type text/plain;
            content_by_lua_block {
                ngx.header.content_length = 13
                ngx.print("Hello, World!")
            }
        }
        location = /bulk {
            root $TLS_BULK_DIR;
            default_type application/octet-stream;
        }
    }
}
CONF
    } >"$dir/nginx.conf"
    echo "$dir/nginx.conf"
}

tls_argv() { # server port -> ARGV
    local s=$1 port=$2 conf
    case $s in
    coserve) ARGV=("$COSERVE_BIN" bench/https_coserve.lua "$port" "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem"
        "$TLS_BULK_BYTES") ;;
    nginx)
        conf=$(tls_nginx_conf "$port")
        ARGV=(env "LD_LIBRARY_PATH=$NGX_LUA_LIBDIR"
            nginx -p "$(dirname "$conf")/" -e "$(dirname "$conf")/error.log" -c "$conf") ;;
    esac
}

# tls_smoke port -> 0 if GET / over TLS 1.3 answers "Hello, World!" and
# /bulk has the right length.
tls_smoke() {
    local port=$1 out len
    out=$(timeout 10 curl -sk --tlsv1.3 "https://127.0.0.1:$port/" 2>>"$LOG" || true)
    len=$(timeout 30 curl -sk -o /dev/null -w '%{size_download}' -r 0-99 "https://127.0.0.1:$port/bulk" 2>>"$LOG" || true)
    echo "tls smoke: body='$out' bulk_head=$len" >>"$LOG"
    [[ $out == "Hello, World!" ]]
}

# tls_run SERVER CASE: one measured run against a fresh server.
tls_run() {
    local s=$1 c=$2 port bg line k url n conns extra=()
    port=$(free_port)
    tls_argv "$s" "$port"
    start_server "tls-$s" "$port" "${ARGV[@]}" || die "${NAME[$s]} failed to start"
    bg=$(wait_quiet)
    BG_MAX=$(awk -v a="$BG_MAX" -v b="$bg" 'BEGIN { print (b > a ? b : a) }')
    url="https://127.0.0.1:$port/"
    for k in $ROUND_KEYS; do R[$s,$c,$k]="-"; done
    if [[ $c == bulk ]]; then
        log "${NAME[$s]}: bulk, $TLS_BULK_BYTES bytes over one TLS connection (curl)"
        busy_measure run_client 300 curl -sk --http1.1 --tlsv1.3 -o /dev/null \
            -w 'bytes=%{size_download} seconds=%{time_total} status=%{http_code}\n' "${url}bulk"
        line=$MEASURED_OUT
        stop_server "$SERVER_PID"
        R[$s,$c,bytes]=$(kv "$line" bytes)
        R[$s,$c,secs]=$(kv "$line" seconds)
        R[$s,$c,errors]=$([[ $(kv "$line" status) == 200 && ${R[$s,$c,bytes]} == "$TLS_BULK_BYTES" ]] && echo 0 || echo 1)
        R[$s,$c,rate]=$(awk -v b="${R[$s,$c,bytes]:-0}" -v t="${R[$s,$c,secs]:-0}" 'BEGIN { if (t > 0) printf "%.0f", b / t / 1e6; else print "n/a" }')
        R[$s,$c,metric]=$(awk -v b="${R[$s,$c,bytes]:-0}" -v t="$BUSY_S" 'BEGIN { if (t > 0) printf "%.0f", b / t / 1e6; else print "n/a" }')
    elif [[ $c == hs ]]; then
        log "${NAME[$s]}: hs, full handshakes, $TLS_HS_CONNS connections at a time, ${BENCH_SECONDS}s"
        busy_measure run_client $((${BENCH_SECONDS%.*} + 30)) "$COSERVE_BIN" bench/tls_handshakes.lua \
            "$port" "$TLS_HS_CONNS" "$BENCH_SECONDS"
        line=$MEASURED_OUT
        stop_server "$SERVER_PID"
        [[ -n $line ]] || die "tls_handshakes produced no result for ${NAME[$s]} (see $LOG)"
        R[$s,$c,rate]=$(kv "$line" rps)
        R[$s,$c,errors]=$(kv "$line" errors)
        R[$s,$c,metric]=$(awk -v n="$(kv "$line" requests)" -v t="$BUSY_S" 'BEGIN { if (t > 0) printf "%.0f", n / t; else print "n/a" }')
    else
        if [[ $c == hsr ]]; then
            conns=$TLS_HS_CONNS
            extra=(-H "Connection: close")
        else
            conns=${c#ka}
        fi
        log "${NAME[$s]}: $c, wrk -t1 -c$conns ${extra[*]}, ${BENCH_WARMUP}s warm-up + ${BENCH_SECONDS}s"
        if awk -v w="$BENCH_WARMUP" 'BEGIN { exit !(w > 0) }'; then
            run_client $((${BENCH_WARMUP%.*} + 30)) wrk -t1 -c"$conns" -d"${BENCH_WARMUP}s" \
                "${extra[@]}" "$url" >>"$LOG" 2>&1 || true
        fi
        echo "== tls $s $c measured" >>"$LOG"
        busy_measure run_client $((${BENCH_SECONDS%.*} + 30)) wrk -t1 -c"$conns" -d"${BENCH_SECONDS}s" \
            --timeout 5s "${extra[@]}" -s bench/http_wrk.lua "$url"
        printf '%s\n' "$MEASURED_OUT" >>"$LOG"
        line=$(grep '^requests=' <<<"$MEASURED_OUT" || true)
        stop_server "$SERVER_PID"
        [[ -n $line ]] || die "wrk produced no result for ${NAME[$s]}, $c (see $LOG)"
        R[$s,$c,rate]=$(kv "$line" rps)
        R[$s,$c,p99_us]=$(kv "$line" p99_us)
        n=$(kv "$line" requests)
        R[$s,$c,errors]=$(($(kv "$line" connect_errors) + $(kv "$line" read_errors) + $(kv "$line" write_errors) +
            $(kv "$line" timeouts) + $(kv "$line" status_errors)))
        R[$s,$c,metric]=$(awk -v n="$n" -v t="$BUSY_S" 'BEGIN { if (t > 0) printf "%.0f", n / t; else print "n/a" }')
    fi
    R[$s,$c,pcs]=$(per_cpu "$(awk -v r="${R[$s,$c,rate]}" 'BEGIN { print r + 0 }')" "$SRV")
    R[$s,$c,cpu_busy]=$BUSY0
    R[$s,$c,cli_busy]=$BUSY1
    R[$s,$c,srv_cpu]=$SRV
    echo "tls $s $c bg_busy=$bg ${line//$'\n'/ } cpu_busy=$BUSY0 cli_busy=$BUSY1 srv_cpu=$SRV busy_s=$BUSY_S metric=${R[$s,$c,metric]}" >>"$LOG"
    log "  -> ${R[$s,$c,metric]} per busy core-s (CPU $SERVER_CPU busy $BUSY0, CPU $CLIENT_CPU busy $BUSY1, errors ${R[$s,$c,errors]})"
}

tls_idle_run() { # server
    local s=$1 port line k
    port=$(free_port)
    tls_argv "$s" "$port"
    BENCH_HEADER_TIMEOUT=60 start_server "tls-$s" "$port" "${ARGV[@]}" || die "${NAME[$s]} failed to start"
    log "${NAME[$s]}: idle memory, $TLS_IDLE_CONNS TLS connections"
    line=$(run_client 120 "$COSERVE_BIN" bench/tls_idle.lua "$port" "$SERVER_PID" "$TLS_IDLE_CONNS" 2 2>>"$LOG" || true)
    echo "tls $s idle $line" >>"$LOG"
    stop_server "$SERVER_PID"
    [[ -n $line ]] || die "tls_idle produced no result for ${NAME[$s]} (see $LOG)"
    for k in conns errors rss_before_kib rss_after_kib kib_per_conn; do R[$s,idle,$k]=$(kv "$line" "$k"); done
    log "  -> $line"
}

tls_main() {
    LOG="$OUT/last-tls-run.log"
    : >"$LOG"
    trap tls_cleanup EXIT
    mkdir -p "$TLS_DIR"
    ensure_packages wrk curl openssl libpcre3
    install_nginx
    setup_nginx_lua
    [[ -z $NGX_LUA_WHY ]] || die "nginx + Lua cannot run: $NGX_LUA_WHY"
    build_coserve
    [[ -z $COSERVE_WHY ]] || die "coserve cannot run: $COSERVE_WHY"
    tls_make_cert
    if [[ " $TLS_CASES " == *" bulk "* ]]; then
        TLS_BULK_DIR=$(mktemp -d /dev/shm/coserve-bench-tls.XXXXXX)
        head -c "$TLS_BULK_BYTES" /dev/zero | tr '\0' x >"$TLS_BULK_DIR/bulk"
    else
        TLS_BULK_DIR=$(mktemp -d /dev/shm/coserve-bench-tls.XXXXXX)
        : >"$TLS_BULK_DIR/bulk"
    fi

    declare -gA NAME R
    NAME[nginx]="nginx ssl + Lua"
    NAME[coserve]="coserve"
    SERVERS=(nginx coserve)
    local s port
    for s in "${SERVERS[@]}"; do
        port=$(free_port)
        tls_argv "$s" "$port"
        echo "== smoke $s: ${ARGV[*]}" >>"$LOG"
        start_server "tls-$s" "$port" "${ARGV[@]}" || die "${NAME[$s]} did not listen (see $OUT/tls-$s.server.log)"
        tls_smoke "$port" || die "${NAME[$s]}: wrong answer over TLS (see $LOG)"
        if [[ $s == nginx ]] && ! maps_luajit "$SERVER_PID" "$NGX_LUA_LIBDIR"; then
            die "nginx did not map the unpacked OpenResty LuaJIT"
        fi
        stop_server "$SERVER_PID"
    done
    COSERVE_OK=1

    BG_MAX=0
    ROUND_KEYS="rate p99_us metric pcs cpu_busy cli_busy srv_cpu errors bytes secs"
    ROUND_METRIC=metric
    ROUND_ERRORS=errors
    local saved_conns=$BENCH_CONNS
    BENCH_CONNS=$TLS_CASES
    run_rounds tls_run "$BENCH_ROUNDS"
    if ((TLS_IDLE_CONNS > 0)); then
        for s in "${SERVERS[@]}"; do tls_idle_run "$s"; done
    fi
    tls_report
    BENCH_CONNS=$saved_conns
}

tls_report() {
    local c cpu_model bt by med what tgt
    cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    bt=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$(dirname "$COSERVE_BIN")/CMakeCache.txt" 2>/dev/null || true)
    echo
    echo "== scripts/bench tls: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs ($cpu_model), kernel $(uname -r)"
    echo "   OpenSSL $(openssl version | awk '{print $2}'), nginx $(dpkg-query -W -f='${Version}' nginx 2>/dev/null || echo '?'), wrk $(dpkg-query -W -f='${Version}' wrk 2>/dev/null || echo '?'), curl $(dpkg-query -W -f='${Version}' curl 2>/dev/null || echo '?')"
    echo "   ECDSA P-256 certificate, TLS 1.3 only; server on CPU $SERVER_CPU, clients on CPU $CLIENT_CPU; wrk: ${BENCH_WARMUP}s warm-up + ${BENCH_SECONDS}s"
    echo "   coserve: $COSERVE_BIN bench/https_coserve.lua (CMake build type: ${bt:-unknown})"
    ((BENCH_ROUNDS > 1)) && echo "   each row: the median of $BENCH_ROUNDS interleaved rounds; targets: the median of the rounds' ratios (all runs in $LOG)"
    echo "   CPU $SERVER_CPU background load before runs (server idle, 0.5 s): at most $(hpct "$BG_MAX")"
    echo
    echo "| case | metric | nginx ssl + Lua | coserve | coserve / nginx (median of rounds) | by round | target |"
    echo "| --- | --- | ---: | ---: | ---: | --- | --- |"
    for c in $TLS_CASES; do
        case $c in
        hs) what="full handshakes per busy server core-second ($TLS_HS_CONNS at a time, coserve client)"; tgt=0.9 ;;
        hsr) what="handshakes, nearly all resumed, per busy server core-second (wrk -c$TLS_HS_CONNS, Connection: close)"; tgt="" ;;
        bulk) what="MB (10^6 bytes) per busy server core-second, one connection"; tgt=0.9 ;;
        *) what="keep-alive requests per busy server core-second, ${c#ka} conns"; tgt=1.0 ;;
        esac
        by=$(round_ratios "$c" coserve nginx metric)
        # shellcheck disable=SC2086
        med=$(median $by)
        echo "| $c | $what | $(hval "nginx,$c,metric") | $(hval "coserve,$c,metric") | $med | $by | $(if [[ -n $tgt ]]; then target "$med" "$tgt"; else echo "none (informational)"; fi) |"
    done
    echo
    echo "The same per second of the server process's own CPU (utime + stime; leaves out the softirq"
    echo "work and idle wake-ups on CPU $SERVER_CPU that the busy-core metric charges to the server):"
    echo
    echo "| case | nginx ssl + Lua | coserve | coserve / nginx (median of rounds) | by round |"
    echo "| --- | ---: | ---: | ---: | --- |"
    for c in $TLS_CASES; do
        by=$(round_ratios "$c" coserve nginx pcs)
        # shellcheck disable=SC2086
        med=$(median $by)
        echo "| $c | $(hval "nginx,$c,pcs") | $(hval "coserve,$c,pcs") | $med | $by |"
    done
    echo
    printf '%-16s %-7s %12s %9s %9s %9s %9s %7s\n' server case per_s p99_us cpu0_busy srv_proc cpu1_busy errors
    for s in "${SERVERS[@]}"; do
        for c in $TLS_CASES; do
            printf '%-16s %-7s %12s %9s %9s %9s %9s %7s\n' "${NAME[$s]}" "$c" "$(hval "$s,$c,rate")" \
                "$(hval "$s,$c,p99_us")" "$(hpct "$(hval "$s,$c,cpu_busy")")" "$(hpct "$(hval "$s,$c,srv_cpu")")" \
                "$(hpct "$(hval "$s,$c,cli_busy")")" "$(hval "$s,$c,errors")"
        done
    done
    echo "   (per_s: handshakes or requests per second, MB/s for bulk; the rows are each server's median round)"
    if ((TLS_IDLE_CONNS > 0)); then
        echo
        echo "| idle TLS connections | conns | errors | RSS before KiB | RSS after KiB | KiB per connection |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: |"
        for s in "${SERVERS[@]}"; do
            echo "| ${NAME[$s]} | $(hval "$s,idle,conns") | $(hval "$s,idle,errors") | $(hval "$s,idle,rss_before_kib") | $(hval "$s,idle,rss_after_kib") | $(hval "$s,idle,kib_per_conn") |"
        done
    fi
    log "raw results: $LOG"
}
