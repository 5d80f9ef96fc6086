#!/usr/bin/env bash
# slow-link.sh up|down|status — makes a registry on this machine look remote (for
# benches/hello-bench.sh; usable by hand).
#
#   up      network namespace $NS joined to this one by a veth pair on one private /30
#           ($HOST_IP here, $NS_IP in $NS); tc tbf at $RATE on both ends (so both
#           directions); and `strata-bench delay-proxy` inside $NS on $NS_IP:$PORT,
#           forwarding to 127.0.0.1:$BACKEND_PORT on the namespace's loopback and holding
#           every byte $DELAY_MS ms each way. Prints the address clients use
#           ($NS_IP:$PORT), the only line on stdout. Idempotent; changed settings apply.
#   down    stops the proxy (its recorded PID), deletes the veth pair and the namespace.
#           Stop what you started in the namespace first (it names what is left).
#   status  prints the state; exit status 0 when link and proxy are up.
#
# Then run the registry in the namespace, on its loopback:
#   ip netns exec strata-slowlink docker-registry serve CONFIG.yml   # http.addr 127.0.0.1:5001
#
# Settings (environment) [defaults]:
#   NS [strata-slowlink]  DELAY_MS [20] (each way)  RATE [100mbit] (each way)
#   HOST_IP [10.213.77.1]  NS_IP [10.213.77.2] (the two hosts of a /30 nothing else uses)
#   PORT [5000] (the proxy, on NS_IP)  BACKEND_PORT [5001] (on 127.0.0.1 in NS)
#   HANDSHAKE_RTT [0]: 1 = the first bytes of each connection wait one more round trip
#     (the proxy accepts at once; a real TCP handshake would cost that)
#   STRATA_BENCH [target/release/strata-bench of this checkout]
#   STATE_DIR [/run/strata-slow-link/$NS]
#
# Measured with the defaults (2-core Debian 12 VM, cargo builds running alongside, the
# registry in the namespace): a request's round trip 42-44 ms (`curl -w %{time_total}
# http://$NS_IP:$PORT/v2/`; TCP connect 0.1-0.3 ms, as the proxy accepts at once); a 50 MB
# blob GET at 11.8 MB/s (94 Mbit/s of payload at 100mbit), its PUT at 11.6 MB/s; the proxy
# used 0.36 s of CPU for 200 MB (~2% of a core at that rate), 10 MB RSS. tbf: burst 64 kB,
# queue 100 ms. The kernel has no netem (`tc qdisc ... netem`: "Specified qdisc kind is
# unknown"), hence tbf for the rate and a user-space proxy for the delay; TCP itself sees
# the short veth path, so slow start and window limits of a real long path are not
# reproduced. Needs root, iproute2.
set -euo pipefail

me=slow-link.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NS=${NS:-strata-slowlink}
DELAY_MS=${DELAY_MS:-20}
RATE=${RATE:-100mbit}
HOST_IP=${HOST_IP:-10.213.77.1}
NS_IP=${NS_IP:-10.213.77.2}
PORT=${PORT:-5000}
BACKEND_PORT=${BACKEND_PORT:-5001}
HANDSHAKE_RTT=${HANDSHAKE_RTT:-0}
STRATA_BENCH=${STRATA_BENCH:-$REPO/target/release/strata-bench}
STATE_DIR=${STATE_DIR:-/run/strata-slow-link/$NS}
# Interface names have at most 15 characters.
VETH_HOST=${NS:0:12}-h
VETH_NS=${NS:0:12}-n
TBF=(burst 64kb latency 100ms)

say() { echo "$me: $*" >&2; }
die() { say "$*"; exit 1; }

validate() {
    [[ $NS =~ ^[A-Za-z0-9_.-]+$ ]] || die "NS: letters, digits, _.- only (got '$NS')"
    [[ $DELAY_MS =~ ^[0-9]+$ ]] || die "DELAY_MS: whole milliseconds (got '$DELAY_MS')"
    [[ $RATE =~ ^[0-9]+(\.[0-9]+)?([kmgt]i?)?(bit|bps)$ ]] || die "RATE: a tc rate like 100mbit (got '$RATE')"
    [[ $PORT =~ ^[0-9]+$ && $BACKEND_PORT =~ ^[0-9]+$ ]] || die "PORT, BACKEND_PORT: numbers"
    [[ $HANDSHAKE_RTT =~ ^[01]$ ]] || die "HANDSHAKE_RTT: 0 or 1"
    # Both addresses private (RFC 1918) and the two usable hosts of one /30.
    "${PYTHON:-python3}" - "$HOST_IP" "$NS_IP" <<'PY' || die "HOST_IP=$HOST_IP NS_IP=$NS_IP: need the two hosts of one private /30"
import ipaddress, sys
a, b = (ipaddress.IPv4Address(x) for x in sys.argv[1:3])
net = ipaddress.IPv4Network(f"{a}/30", strict=False)
sys.exit(0 if a.is_private and b in net and a != b and {a, b} <= set(net.hosts()) else 1)
PY
}

alive() { [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
has_ns() { ip netns list | awk '{print $1}' | grep -qxF "$NS"; }

# The proxy `up` started, if it still runs: its PID, checked against its command line.
proxy_pid() {
    local pid
    pid=$(cat "$STATE_DIR/proxy.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "delay-proxy $NS_IP:$PORT " && echo "$pid"
}
stop_proxy() {
    local pid
    if pid=$(proxy_pid); then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 30); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE_DIR/proxy.pid" "$STATE_DIR/proxy.args"
}

up() {
    validate
    [ "$(id -u)" = 0 ] || die "needs root"
    command -v tc >/dev/null || die "tc missing (apt-get install iproute2)"
    [ -x "$STRATA_BENCH" ] || die "$STRATA_BENCH missing: cargo build --release --locked -p strata-benches --bin strata-bench"
    local used
    used=$(ip -o -4 addr show to "$HOST_IP/30" | awk -v me="$VETH_HOST" '$2 != me {print $2, $4}')
    [ -z "$used" ] || die "$HOST_IP/30 is in use: $used (set HOST_IP and NS_IP)"
    mkdir -p "$STATE_DIR"

    has_ns || ip netns add "$NS"
    if ! ip link show "$VETH_HOST" >/dev/null 2>&1; then
        ip link add "$VETH_HOST" type veth peer name "$VETH_NS" netns "$NS"
    fi
    ip addr replace "$HOST_IP/30" dev "$VETH_HOST"
    ip link set "$VETH_HOST" up
    ip -n "$NS" link set lo up
    ip -n "$NS" addr replace "$NS_IP/30" dev "$VETH_NS"
    ip -n "$NS" link set "$VETH_NS" up
    tc qdisc replace dev "$VETH_HOST" root tbf rate "$RATE" "${TBF[@]}"
    tc -n "$NS" qdisc replace dev "$VETH_NS" root tbf rate "$RATE" "${TBF[@]}"

    local args=(delay-proxy "$NS_IP:$PORT" "127.0.0.1:$BACKEND_PORT" --delay-ms "$DELAY_MS")
    [ "$HANDSHAKE_RTT" = 1 ] && args+=(--handshake-rtt)
    if ! proxy_pid >/dev/null || [ "$(cat "$STATE_DIR/proxy.args" 2>/dev/null)" != "$STRATA_BENCH ${args[*]}" ]; then
        stop_proxy
        # Its own session: not killed with the caller's process group.
        setsid ip netns exec "$NS" "$STRATA_BENCH" "${args[@]}" </dev/null >>"$STATE_DIR/proxy.log" 2>&1 &
        echo $! >"$STATE_DIR/proxy.pid"
        echo "$STRATA_BENCH ${args[*]}" >"$STATE_DIR/proxy.args"
        local ok=
        for _ in $(seq 50); do
            # `ip netns exec` execs the proxy, so the PID is the proxy's once it listens.
            if timeout 1 bash -c "exec 3<>/dev/tcp/$NS_IP/$PORT" 2>/dev/null; then ok=1; break; fi
            alive "$(cat "$STATE_DIR/proxy.pid")" || break
            sleep 0.1
        done
        [ -n "$ok" ] || { tail -5 "$STATE_DIR/proxy.log" >&2; stop_proxy; die "the delay proxy did not come up"; }
    fi
    declare -p NS DELAY_MS RATE HOST_IP NS_IP PORT BACKEND_PORT HANDSHAKE_RTT | sed 's/^declare -- //' >"$STATE_DIR/settings"
    say "up: $HOST_IP ($VETH_HOST) <-> $NS_IP ($VETH_NS, netns $NS), tbf $RATE and $DELAY_MS ms each way;" \
        "registry goes on 127.0.0.1:$BACKEND_PORT in $NS"
    echo "$NS_IP:$PORT"
}

down() {
    [ "$(id -u)" = 0 ] || die "needs root"
    stop_proxy
    if has_ns; then
        local left
        left=$(ip netns pids "$NS" 2>/dev/null | tr '\n' ' ')
        [ -z "$left" ] || say "still running in $NS (not stopped): $left"
        ip netns del "$NS"
    fi
    ip link del "$VETH_HOST" 2>/dev/null || true # gone with the namespace's end, normally
    rm -rf "$STATE_DIR"
    rmdir "$(dirname "$STATE_DIR")" 2>/dev/null || true
    say "down: $NS removed"
}

status() {
    local ok=0 pid
    # What `up` set, not this shell's environment.
    # shellcheck source=/dev/null
    [ -f "$STATE_DIR/settings" ] && . "$STATE_DIR/settings"
    if has_ns; then echo "netns $NS: present"; else echo "netns $NS: absent"; ok=1; fi
    if ip link show "$VETH_HOST" >/dev/null 2>&1; then
        ip -o -4 addr show dev "$VETH_HOST" | awk '{print $2, $4}'
        tc qdisc show dev "$VETH_HOST" | sed 's/^/  /'
        ip -n "$NS" -o -4 addr show dev "$VETH_NS" | awk '{print $2, $4}'
        tc -n "$NS" qdisc show dev "$VETH_NS" | sed 's/^/  /'
    else
        echo "veth $VETH_HOST: absent"; ok=1
    fi
    if pid=$(proxy_pid); then echo "delay proxy: pid $pid: $(cat "$STATE_DIR/proxy.args")"
    else echo "delay proxy: not running"; ok=1; fi
    if [ $ok = 0 ]; then
        if ip netns exec "$NS" bash -c "exec 3<>/dev/tcp/127.0.0.1/$BACKEND_PORT" 2>/dev/null; then
            echo "backend 127.0.0.1:$BACKEND_PORT in $NS: listening"
        else
            echo "backend 127.0.0.1:$BACKEND_PORT in $NS: nothing listening"
        fi
        echo "clients use: $NS_IP:$PORT"
    fi
    return $ok
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $me up|down|status (settings in the environment; see the header)" >&2; exit 2 ;;
esac
