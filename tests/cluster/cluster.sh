#!/usr/bin/env bash
# Throw-away three-node RabbitMQ cluster on this host, for cluster fault tests.
#
# Usage: tests/cluster/cluster.sh <command> [args]
#   start                    stop/wipe any old lw cluster, start lw1..lw3 as one
#                            cluster; the last stdout line is the comma-separated
#                            AMQP URLs (node 1, 2, 3)
#   stop                     kill -9 every lw node (frozen ones too), wipe the data
#   kill N                   kill -9 node N's VM
#   restart N                start node N again (after kill), wait until it is
#                            back in the cluster
#   freeze N                 SIGSTOP node N's VM; the others declare it down
#                            5-7 s later (net_ticktime 5)
#   thaw N                   SIGCONT node N's VM, then wait until the cluster is
#                            whole again; if it stays split (usual), restart N's
#                            rabbit app, which drops N's client connections
#   await                    wait until every live node is booted and clustered
#   heal                     undo any fault: restart killed nodes, thaw frozen
#                            ones, clear memory alarms, wait until healthy
#   alarm N on|off           raise/clear a memory alarm on node N; returns once
#                            every running node sees it (publishers on ALL nodes
#                            get connection.blocked / unblocked)
#   leader VHOST QUEUE       print the index (1..3) of the quorum queue's leader
#                            as recorded in the queue record (moves ~0.3 s after
#                            a kill, ~6 s after a freeze)
#   node-of-connection NAME  print the index of the node holding the client
#                            connection whose connection_name property is NAME
#   ctl N ARGS...            rabbitmqctl against node N, e.g. `ctl 1 cluster_status`
#
# Nodes: lwN@localhost, AMQP on 127.0.0.1:568N (guest/guest), Erlang distribution
# on 127.0.0.1:2568N, data and logs in /dev/shm/lw-cluster/lwN. The system's
# default node (rabbit@localhost, port 5672) shares only epmd with this cluster:
# nothing here reads /etc/rabbitmq, its cookie or its data.
#
# Progress goes to stderr, one line per action; results go to stdout; any
# failure exits non-zero with a `cluster.sh: error:` line.
set -euo pipefail

readonly RMQ_BIN=/usr/lib/rabbitmq/bin
readonly BASE=/dev/shm/lw-cluster
readonly HOST=localhost
readonly NODES=(1 2 3)
# Low so that a frozen node is declared down after 5-7 s; not lower, because on
# a busy 2-core machine a starved VM must not be mistaken for a dead one.
readonly NET_TICKTIME=5
# Fixed and modest, so that `alarm N off` can restore exactly this value.
readonly WATERMARK_BYTES=$((1024 * 1024 * 1024))
readonly BOOT_TIMEOUT=90

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

node_name() { printf 'lw%s@%s' "$1" "$HOST"; }
amqp_port() { printf '%s' $((5680 + $1)); }
dist_port() { printf '%s' $((25680 + $1)); }
node_dir() { printf '%s/lw%s' "$BASE" "$1"; }
now_ms() { printf '%s' $((${EPOCHREALTIME/./} / 1000)); }

check_index() {
    [[ "${1:-}" =~ ^[1-3]$ ]] || die "node index must be 1, 2 or 3 (got '${1:-}')"
}

# Makes a string safe inside an Erlang "..." literal.
erl_str() {
    local s=${1//\\/\\\\}
    printf '%s' "${s//\"/\\\"}"
}

# Every server and CLI invocation gets this environment, so that the packaged
# /etc/rabbitmq/rabbitmq-env.conf (which pins rabbit@localhost) and the system
# cookie are never consulted. One shared HOME gives nodes and CLI one cookie.
with_node_env() {
    local n=$1 dir
    shift
    dir=$(node_dir "$n")
    env \
        HOME="$BASE/home" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        RABBITMQ_CONF_ENV_FILE="$BASE/empty-env.conf" \
        RABBITMQ_NODENAME="$(node_name "$n")" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
        RABBITMQ_DIST_PORT="$(dist_port "$n")" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/beam.pid" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 1:1 +SDcpu 1:1 -kernel inet_dist_use_interface {127,0,0,1} -lw_node lw$n" \
        "$@"
}

ctl() {
    local n=$1
    shift
    with_node_env "$n" "$RMQ_BIN/rabbitmqctl" -n "$(node_name "$n")" "$@"
}

# rabbitmqctl eval on node N; prints the result, or the CLI's complaint on stderr.
ev() {
    local n=$1 out
    if out=$(ctl "$n" -q eval "$2" 2>&1); then
        printf '%s\n' "$out"
    else
        log "eval on lw$n failed: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
        return 1
    fi
}

# The node name is not on the beam.smp command line (3.10 sets it at run time),
# so every VM carries a `-lw_node lwN` marker argument to be found by.
beam_pid() {
    pgrep -f -- "beam\.smp .* -lw_node lw$1( |\$)" | head -n1 || true
}

all_beam_pids() {
    pgrep -f -- "beam\.smp .* -lw_node lw[0-9]+( |\$)" || true
}

is_frozen() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null || true)
    [[ "$state" == T* ]]
}

# Nodes whose VM exists and is not stopped. CLI calls to a frozen node hang, so
# queries go only to these.
live_nodes() {
    local n pid
    for n in "${NODES[@]}"; do
        pid=$(beam_pid "$n")
        if [[ -n "$pid" ]] && ! is_frozen "$pid"; then
            printf '%s\n' "$n"
        fi
    done
}

# Runs an eval on the first live node that answers (a paused node may not).
ev_any() {
    local n
    for n in $(live_nodes); do
        ev "$n" "$1" && return 0
    done
    return 1
}

write_node_files() {
    local n=$1 dir
    dir=$(node_dir "$n")
    mkdir -p "$dir/mnesia" "$dir/log"
    # No plugins: faster boot, and no clash with the default node's 15672 etc.
    printf '[].\n' >"$dir/enabled_plugins"
    cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
cluster_partition_handling = pause_minority
vm_memory_high_watermark.absolute = $WATERMARK_BYTES
disk_free_limit.absolute = 50MB
log.console = false
log.file.level = info
EOF
    if [[ "$n" != 1 ]]; then
        # lw2 and lw3 join lw1 while booting, which is much faster than booting
        # standalone and then doing stop_app / join_cluster / start_app. They
        # retry until lw1's database is up; should they give up, they come up
        # standalone and `start` fails its health check.
        cat >>"$dir/rabbitmq.conf" <<EOF
cluster_formation.peer_discovery_backend = classic_config
cluster_formation.classic_config.nodes.1 = $(node_name 1)
cluster_formation.discovery_retry_limit = $((BOOT_TIMEOUT * 4))
cluster_formation.discovery_retry_interval = 250
EOF
    fi
    printf '[{kernel, [{net_ticktime, %s}]}].\n' "$NET_TICKTIME" >"$dir/advanced.config"
}

start_node() {
    local n=$1 dir
    dir=$(node_dir "$n")
    # A stale pid file would make `rabbitmqctl wait` watch a dead process.
    rm -f "$dir/beam.pid"
    # -detached: erl daemonizes, so this returns as soon as the VM is forked.
    with_node_env "$n" "$RMQ_BIN/rabbitmq-server" -detached >>"$dir/log/server-stdout.log" 2>&1 \
        || die "rabbitmq-server failed for lw$n (see $dir/log)"
}

# Waits for the pid file, then for the rabbit application to finish booting.
await_boot() {
    local n=$1 out
    out=$(ctl "$n" -q wait "$(node_dir "$n")/beam.pid" --timeout "$BOOT_TIMEOUT" 2>&1) \
        || die "lw$n did not boot within ${BOOT_TIMEOUT}s: $(tail -n 2 <<<"$out" | tr '\n' ' ')(logs: $(node_dir "$n")/log)"
}

# Healthy = every live node has finished booting, counts exactly the live nodes
# as running cluster members, and knows of no network partition. Prints `ok` or
# the first problem found.
health() {
    local n atoms=()
    for n in $(live_nodes); do atoms+=("$(node_name "$n")"); done
    [[ ${#atoms[@]} -gt 0 ]] || { echo "no live node"; return 0; }
    local list
    list=$(IFS=,; printf '%s' "${atoms[*]}")
    ev_any "
        Ns = lists:sort([$list]),
        Check = fun(N) ->
            Booted = rpc:call(N, rabbit, is_booted, [], 3000),
            Running = rpc:call(N, rabbit_nodes, all_running, [], 3000),
            Parts = rpc:call(N, rabbit_node_monitor, partitions, [], 3000),
            if Booted =/= true -> {N, not_booted};
               not is_list(Running) -> {N, Running};
               Parts =/= [] -> {N, {partitioned_from, Parts}};
               true -> case lists:sort(Running) of
                           Ns -> ok;
                           Other -> {N, {running, Other}}
                       end
            end
        end,
        case [P || P <- lists:map(Check, Ns), P =/= ok] of
            [] -> ok;
            [P | _] -> P
        end." || echo "no live node answered"
}

# Polls health until ok; returns 1 after $1 seconds with the last problem logged.
await_healthy() {
    local deadline=$(($(now_ms) + $1 * 1000)) state
    while true; do
        state=$(health | tr -d ' \n')
        [[ "$state" == ok ]] && return 0
        if (($(now_ms) > deadline)); then
            log "cluster not healthy: $state"
            return 1
        fi
        sleep 0.5
    done
}

cmd_stop() {
    local pid pids count=0
    pids=$(all_beam_pids)
    for pid in $pids; do
        # SIGKILL also works on a SIGSTOPped process.
        kill -KILL "$pid" 2>/dev/null && count=$((count + 1))
    done
    for _ in $(seq 50); do
        [[ -z "$(all_beam_pids)" ]] && break
        sleep 0.1
    done
    [[ -z "$(all_beam_pids)" ]] || die "lw VMs still alive: $(all_beam_pids | tr '\n' ' ')"
    rm -rf "$BASE"
    log "stopped: killed $count VM(s), removed $BASE"
}

cmd_start() {
    local n t0 urls=()
    t0=$(now_ms)
    cmd_stop
    mkdir -p "$BASE/home"
    : >"$BASE/empty-env.conf"
    # A fresh random cookie per cluster; Erlang refuses a group/world-readable one.
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$BASE/home/.erlang.cookie"
    chmod 400 "$BASE/home/.erlang.cookie"
    for n in "${NODES[@]}"; do
        write_node_files "$n"
        start_node "$n"
    done
    log "launched lw1..lw3"
    for n in "${NODES[@]}"; do await_boot "$n"; done
    await_healthy 30 || die "lw1..lw3 booted but did not form one cluster"
    log "cluster of 3 running after $(($(now_ms) - t0)) ms"
    for n in "${NODES[@]}"; do
        urls+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/%2f")
    done
    (IFS=,; printf '%s\n' "${urls[*]}")
}

cmd_kill() {
    local n=$1 pid
    pid=$(beam_pid "$n")
    [[ -n "$pid" ]] || die "lw$n is not running"
    kill -KILL "$pid"
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { log "killed lw$n (pid $pid)"; return 0; }
        sleep 0.1
    done
    die "lw$n (pid $pid) survived SIGKILL"
}

cmd_restart() {
    local n=$1 t0
    t0=$(now_ms)
    [[ -z "$(beam_pid "$n")" ]] || die "lw$n is still running; kill it first"
    [[ -d "$(node_dir "$n")/mnesia" ]] || die "no data for lw$n; use start"
    start_node "$n"
    await_boot "$n"
    await_healthy 60 || die "lw$n booted but did not rejoin the cluster"
    log "restarted lw$n, cluster whole after $(($(now_ms) - t0)) ms"
}

cmd_freeze() {
    local n=$1 pid
    pid=$(beam_pid "$n")
    [[ -n "$pid" ]] || die "lw$n is not running"
    kill -STOP "$pid"
    log "froze lw$n (pid $pid)"
}

# After a freeze longer than net_ticktime the other nodes have dropped the
# node. On SIGCONT, pause_minority only pauses it (and then rejoins it, in under
# a second) if it sees both peers down at once; but the VM reconnects to its
# peers before it has processed their nodedown events, so in most runs here it
# counts a majority, never pauses, and the cluster stays split for good
# (mnesia "inconsistent_database", the node missing from the others' running
# list, stale partition lists). Restarting the thawed node's rabbit app, the
# recovery RabbitMQ documents for partitions, mends it.
cmd_thaw() {
    local n=$1 pid t0 state healed=""
    pid=$(beam_pid "$n")
    [[ -n "$pid" ]] || die "lw$n is not running"
    t0=$(now_ms)
    kill -CONT "$pid"
    while true; do
        state=$(health | tr -d ' \n')
        [[ "$state" == ok ]] && break
        # The pause-and-rejoin takes well under a second here, so a cluster
        # still not whole after a few seconds is stuck.
        if [[ -z "$healed" ]] && (($(now_ms) - t0 > 3000)); then
            log "cluster still split 3 s after thawing lw$n ($state); restarting lw$n's rabbit app"
            ctl "$n" -q stop_app >/dev/null 2>&1 || die "stop_app on lw$n failed"
            ctl "$n" -q start_app >/dev/null 2>&1 || die "start_app on lw$n failed"
            healed=" (repaired a partition)"
        fi
        (($(now_ms) - t0 < 60000)) || die "cluster did not recover after thawing lw$n: $state"
        sleep 0.5
    done
    log "thawed lw$n (pid $pid), cluster whole after $(($(now_ms) - t0)) ms$healed"
}

cmd_await() {
    await_healthy "$BOOT_TIMEOUT" || die "cluster did not become healthy"
    log "cluster healthy: lw$(live_nodes | paste -sd, | sed 's/,/,lw/g') running"
}

# What a test runs before its scenario: whatever an earlier one left (a killed,
# frozen or alarmed node, maybe after a failed assertion) is undone.
cmd_heal() {
    local n pid
    for n in "${NODES[@]}"; do
        pid=$(beam_pid "$n")
        if [[ -z "$pid" ]]; then
            cmd_restart "$n"
        elif is_frozen "$pid"; then
            # Left frozen by a failed scenario: a thaw may leave its quorum
            # members behind for a while; a fresh start is the clean state.
            cmd_kill "$n"
            cmd_restart "$n"
        fi
    done
    for n in "${NODES[@]}"; do
        ctl "$n" -q set_vm_memory_high_watermark absolute "$WATERMARK_BYTES" >/dev/null 2>&1 ||
            die "could not clear a memory alarm on lw$n"
    done
    cmd_await
}

cmd_alarm() {
    local n=$1 mode=${2:-} want out
    case "$mode" in
        # A 1-byte watermark trips the memory monitor at once and the alarm then
        # travels the same path as a real one; it stays until the watermark is
        # restored (or the node restarts, which reloads the configured value).
        on) want=on; out=$(ctl "$n" -q set_vm_memory_high_watermark absolute 1 2>&1) ;;
        off) want=off; out=$(ctl "$n" -q set_vm_memory_high_watermark absolute "$WATERMARK_BYTES" 2>&1) ;;
        *) die "usage: alarm N on|off" ;;
    esac || die "set_vm_memory_high_watermark on lw$n failed: $(head -n 1 <<<"$out")"
    # Each node blocks its own publishers based on its own view of the
    # cluster's alarms, so wait until every running node agrees.
    local seen
    for _ in $(seq 40); do
        seen=$(ev "$n" "
            Key = {resource_limit, memory, node()},
            {Rs, _} = rpc:multicall(rabbit_nodes:all_running(), rabbit_alarm, get_alarms, [], 5000),
            Seen = [is_list(R) andalso lists:keymember(Key, 1, R) || R <- Rs],
            case lists:usort(Seen) of [true] -> on; [false] -> off; _ -> mixed end.") || true
        [[ "$seen" == "$want" ]] && { log "memory alarm $mode for lw$n, seen by all running nodes"; return 0; }
        sleep 0.25
    done
    die "memory alarm of lw$n not $want everywhere (last: $seen)"
}

cmd_leader() {
    local vhost=${1:-} queue=${2:-} out
    [[ -n "$vhost" && -n "$queue" ]] || die "usage: leader VHOST QUEUE"
    # The queue record names the leader that last registered itself; reading it
    # is a local database lookup, so it works while other nodes are down or
    # frozen (list_queues then skips or waits for queues).
    out=$(ev_any "
        R = rabbit_misc:r(<<\"$(erl_str "$vhost")\"/utf8>>, queue, <<\"$(erl_str "$queue")\"/utf8>>),
        case rabbit_amqqueue:lookup(R) of
            {ok, Q} -> case amqqueue:get_pid(Q) of
                           {_, Node} when is_atom(Node) -> Node;
                           _ -> not_quorum
                       end;
            _ -> not_found
        end.") || die "no live node answered"
    case "$out" in
        lw[1-3]@*) printf '%s\n' "${out:2:1}" ;;
        not_found) die "no queue '$queue' in vhost '$vhost'" ;;
        not_quorum) die "queue '$queue' is not a quorum queue" ;;
        *) die "unexpected leader '$out'" ;;
    esac
}

cmd_node_of_connection() {
    local name=${1:-} out
    [[ -n "$name" ]] || die "usage: node-of-connection NAME"
    # Asks each running node for its own connections with a timeout, so that a
    # frozen node that is not yet declared down cannot stall the query.
    out=$(ev_any "
        Want = {<<\"connection_name\">>, longstr, <<\"$(erl_str "$name")\"/utf8>>},
        Named = fun(P) ->
            case catch rabbit_reader:info(P, [client_properties]) of
                [{client_properties, Props}] -> lists:member(Want, Props);
                _ -> false
            end
        end,
        {Rs, _} = rpc:multicall(rabbit_nodes:all_running(), rabbit_networking, local_connections, [], 5000),
        lists:usort([node(P) || R <- Rs, is_list(R), P <- R, Named(P)]).") \
        || die "no live node answered"
    out=$(tr -d ' \n' <<<"$out")
    case "$out" in
        "[lw"[1-3]"@$HOST]") printf '%s\n' "${out:3:1}" ;;
        "[]") die "no connection named '$name'" ;;
        *) die "connection '$name' found on several nodes: $out" ;;
    esac
}

main() {
    local cmd=${1:-}
    shift || true
    case "$cmd" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        kill) check_index "${1:-}"; cmd_kill "$1" ;;
        restart) check_index "${1:-}"; cmd_restart "$1" ;;
        freeze) check_index "${1:-}"; cmd_freeze "$1" ;;
        thaw) check_index "${1:-}"; cmd_thaw "$1" ;;
        await) cmd_await ;;
        heal) cmd_heal ;;
        alarm) check_index "${1:-}"; cmd_alarm "$1" "${2:-}" ;;
        leader) cmd_leader "$@" ;;
        node-of-connection) cmd_node_of_connection "$@" ;;
        ctl) check_index "${1:-}"; ctl "$@" ;;
        *)
            # Print the usage block at the top of this file.
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
            exit 2
            ;;
    esac
}

# Sourcing the file (for experiments) defines the functions without running.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
