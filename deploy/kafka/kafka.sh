#!/usr/bin/env bash
# Local single-node Apache Kafka (KRaft, broker + controller in one JVM).
#
#   deploy/kafka/kafka.sh start     reuse a ready broker on the port, or fetch
#                                   jars / format storage (once) / start one
#                                   and wait until it serves requests
#   deploy/kafka/kafka.sh stop      stop the broker this script started
#   deploy/kafka/kafka.sh status    exit 0 when a broker is ready on the port
#   deploy/kafka/kafka.sh restart   stop, then start
#
# Environment:
#   RETENTION_KAFKA_PORT             client port        (default 19092)
#   RETENTION_KAFKA_CONTROLLER_PORT  controller port    (default 19093)
#   RETENTION_KAFKA_START_TIMEOUT    seconds to wait for readiness (default 90)
#   RETENTION_KAFKA_HEAP_OPTS        JVM heap flags (default -Xms256m -Xmx1g)
#   RETENTION_KAFKA_JAVA_OPTS        extra JVM flags
#   JAVA_HOME                        Java 17+ to use (default: java on PATH)
#
# Everything it writes lives under <repo>/var (git-ignored):
#   var/cache/kafka-libs/   jars copied from Maven by deploy/kafka/pom.xml
#   var/kafka/              server.properties, cluster.id, kafka.pid, data/
#   var/log/kafka.log       broker log (log4j2), var/log/kafka.out: stdout/err
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

HOST=127.0.0.1
PORT=${RETENTION_KAFKA_PORT:-19092}
CONTROLLER_PORT=${RETENTION_KAFKA_CONTROLLER_PORT:-19093}
START_TIMEOUT=${RETENTION_KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT=30
HEAP_OPTS=${RETENTION_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}

POM=$HERE/pom.xml
TEMPLATE=$HERE/server.properties
LOG4J_CONFIG=$HERE/log4j2.properties
PROBE=$HERE/kafka_probe.py

VAR=$ROOT/var
LIBS=$VAR/cache/kafka-libs
LIBS_MARKER=$LIBS/.pom.sha256
KAFKA_DIR=$VAR/kafka
DATA_DIR=$KAFKA_DIR/data
PROPS=$KAFKA_DIR/server.properties
CLUSTER_ID_FILE=$KAFKA_DIR/cluster.id
PID_FILE=$KAFKA_DIR/kafka.pid
PORT_FILE=$KAFKA_DIR/kafka.port
LOCK_FILE=$KAFKA_DIR/kafka.lock
LOG_DIR=$VAR/log
LOG_FILE=$LOG_DIR/kafka.log
OUT_FILE=$LOG_DIR/kafka.out

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    JAVA=$JAVA_HOME/bin/java
else
    JAVA=java
fi

say() { echo "kafka: $*"; }
die() { echo "kafka: ERROR: $*" >&2; exit 1; }

usage() {
    echo "usage: $0 {start|stop|status|restart}" >&2
    exit 2
}

# --------------------------------------------------------------------------
# probes

# True when something accepts TCP connections on the client port.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$PORT" 2>/dev/null
}

# True when a Kafka broker on the client port answers a Metadata request
# listing a live broker (see kafka_probe.py). Without python3, falls back to
# "the port accepts connections".
broker_ready() {
    if command -v python3 >/dev/null 2>&1; then
        python3 "$PROBE" "$HOST" "$PORT" 2
    else
        port_open
    fi
}

# Prints the pid from the pid file when that process is alive and is a
# kafka.Kafka JVM (guards against a recycled pid).
running_pid() {
    local pid
    [[ -f "$PID_FILE" ]] || return 1
    pid=$(cat "$PID_FILE" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
    echo "$pid"
}

show_logs() {
    echo "----- last lines of $LOG_FILE -----" >&2
    tail -n 40 "$LOG_FILE" >&2 2>/dev/null || true
    echo "----- last lines of $OUT_FILE -----" >&2
    tail -n 20 "$OUT_FILE" >&2 2>/dev/null || true
}

# --------------------------------------------------------------------------
# preparation

check_java() {
    local line major
    command -v "$JAVA" >/dev/null 2>&1 || die "java not found (Kafka 4 needs Java 17+; set JAVA_HOME or install openjdk-17-jre-headless)"
    line=$("$JAVA" -version 2>&1 | head -n 1)
    major=$(sed -E 's/.*version "([0-9]+)(\.([0-9]+))?.*/\1 \3/' <<<"$line")
    if [[ "${major%% *}" == 1 ]]; then major=${major#* }; else major=${major%% *}; fi
    [[ "$major" =~ ^[0-9]+$ && "$major" -ge 17 ]] || die "Kafka 4 needs Java 17+, found: $line"
}

# Copies the broker's jars from Maven into var/cache/kafka-libs, unless the
# jars for the current pom.xml (by checksum) are already there.
ensure_jars() {
    local sum tmp
    sum=$(sha256sum "$POM" | cut -d' ' -f1)
    if [[ -f "$LIBS_MARKER" && "$(cat "$LIBS_MARKER")" == "$sum" ]] \
        && compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null; then
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn not found: it is needed once to fetch the Kafka jars"
    say "fetching Kafka jars with Maven into ${LIBS#"$ROOT"/} ..."
    tmp=$LIBS.tmp.$$
    rm -rf "$tmp"
    mkdir -p "$(dirname "$LIBS")"
    if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
            -DoutputDirectory="$tmp" >"$LOG_DIR/kafka-mvn.log" 2>&1; then
        cat "$LOG_DIR/kafka-mvn.log" >&2
        rm -rf "$tmp"
        die "Maven could not fetch the Kafka jars (output above, also in ${LOG_DIR#"$ROOT"/}/kafka-mvn.log)"
    fi
    echo "$sum" >"$tmp/.pom.sha256"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
}

# Writes var/kafka/server.properties from the template with this checkout's
# ports and data directory.
write_props() {
    local tmp=$PROPS.tmp.$$
    sed -e "s#127\.0\.0\.1:19092#$HOST:$PORT#g" \
        -e "s#127\.0\.0\.1:19093#$HOST:$CONTROLLER_PORT#g" \
        -e "s#^log\.dirs=.*#log.dirs=$DATA_DIR#" \
        "$TEMPLATE" >"$tmp"
    mv "$tmp" "$PROPS"
}

run_tool() {
    "$JAVA" -cp "$LIBS/*" \
        -Dkafka.logs.dir="$LOG_DIR" -Dlog4j2.configurationFile="$LOG4J_CONFIG" \
        kafka.tools.StorageTool "$@"
}

# Formats the KRaft storage once; the cluster id is kept in var/kafka/cluster.id.
ensure_formatted() {
    local cid
    if [[ -f "$DATA_DIR/meta.properties" ]]; then
        cid=$(sed -n 's/^cluster\.id=//p' "$DATA_DIR/meta.properties")
        if [[ -n "$cid" && "$(cat "$CLUSTER_ID_FILE" 2>/dev/null || true)" != "$cid" ]]; then
            echo "$cid" >"$CLUSTER_ID_FILE"
        fi
        return 0
    fi
    if [[ -s "$CLUSTER_ID_FILE" ]]; then
        cid=$(cat "$CLUSTER_ID_FILE")
    else
        cid=$(run_tool random-uuid | tail -n 1)
        [[ -n "$cid" ]] || die "could not generate a cluster id"
        echo "$cid" >"$CLUSTER_ID_FILE"
    fi
    say "formatting storage in ${DATA_DIR#"$ROOT"/} (cluster id $cid)"
    mkdir -p "$DATA_DIR"
    # Static quorum (controller.quorum.voters), hence no --standalone.
    if ! run_tool format --cluster-id "$cid" --config "$PROPS" --ignore-formatted \
            >>"$OUT_FILE" 2>&1; then
        show_logs
        die "formatting the Kafka storage failed"
    fi
}

# Client port of the broker in the pid file (the one it was started with).
running_port() {
    cat "$PORT_FILE" 2>/dev/null || true
}

# Waits until the broker with the given pid serves requests. With
# "kill-on-timeout" as second argument, a broker that does not get ready in
# time is stopped.
wait_ready() {
    local pid=$1 on_timeout=${2:-} deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            show_logs
            rm -f "$PID_FILE"
            rm -f "$PORT_FILE"
            die "the broker (pid $pid) exited during start-up"
        fi
        if broker_ready; then
            return 0
        fi
        sleep 0.5
    done
    show_logs
    if [[ "$on_timeout" == kill-on-timeout ]]; then
        say "not ready after ${START_TIMEOUT}s; stopping pid $pid"
        stop_pid "$pid"
    fi
    die "the broker did not become ready on $HOST:$PORT within ${START_TIMEOUT}s"
}

stop_pid() {
    local pid=$1 deadline=$((SECONDS + STOP_TIMEOUT))
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "pid $pid still alive after ${STOP_TIMEOUT}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$PID_FILE" "$PORT_FILE"
}

# --------------------------------------------------------------------------
# commands

cmd_start() {
    local pid started=$SECONDS
    mkdir -p "$KAFKA_DIR" "$LOG_DIR"
    exec 9>"$LOCK_FILE"
    flock -w $((START_TIMEOUT + 60)) 9 || die "another kafka.sh holds $LOCK_FILE"

    if broker_ready; then
        if pid=$(running_pid); then
            say "already running (pid $pid) on $HOST:$PORT; reusing it"
        else
            say "a broker already answers on $HOST:$PORT; reusing it"
        fi
        return 0
    fi
    if pid=$(running_pid); then
        local other
        other=$(running_port)
        if [[ -n "$other" && "$other" != "$PORT" ]]; then
            die "this checkout's broker (pid $pid) runs on port $other, not $PORT (they share var/kafka/data): run '$0 stop' first, or use RETENTION_KAFKA_PORT=$other"
        fi
        say "broker (pid $pid) is starting; waiting for it"
        wait_ready "$pid"
        say "ready on $HOST:$PORT (pid $pid)"
        return 0
    fi
    if port_open; then
        # Maybe a broker of another checkout that is still starting up.
        say "something listens on $HOST:$PORT but is not a ready broker yet; waiting up to 30s"
        local deadline=$((SECONDS + 30))
        while ((SECONDS < deadline)); do
            if broker_ready; then
                say "a broker now answers on $HOST:$PORT; reusing it"
                return 0
            fi
            sleep 1
        done
        die "port $PORT on $HOST is taken by something that is not a Kafka broker (set RETENTION_KAFKA_PORT)"
    fi

    check_java
    ensure_jars
    write_props
    ensure_formatted

    say "starting broker on $HOST:$PORT (controller $HOST:$CONTROLLER_PORT)"
    # A pid file left by a broker that died with its machine would otherwise
    # be read back below as the new broker's pid.
    rm -f "$PID_FILE" "$PORT_FILE"
    # setsid: own session, so the broker outlives the calling make/CI step
    # and ignores its terminal's signals. 9>&- keeps the lock out of the JVM.
    # The inner bash records its own pid, then execs java (same pid).
    # shellcheck disable=SC2016,SC2086
    nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
        "$JAVA" $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dkafka.logs.dir="$LOG_DIR" -Dlog4j2.configurationFile="$LOG4J_CONFIG" \
        ${RETENTION_KAFKA_JAVA_OPTS:-} \
        -cp "$LIBS/*" kafka.Kafka "$PROPS" \
        </dev/null >>"$OUT_FILE" 2>&1 9>&- &
    local launcher=$!
    local tries=0
    while [[ ! -s "$PID_FILE" ]] && ((tries++ < 50)); do
        sleep 0.1
    done
    pid=$(cat "$PID_FILE" 2>/dev/null || echo "$launcher")
    echo "$PORT" >"$PORT_FILE"
    wait_ready "$pid" kill-on-timeout
    say "ready on $HOST:$PORT (pid $pid, $((SECONDS - started))s)"
}

cmd_stop() {
    local pid
    mkdir -p "$KAFKA_DIR"
    exec 9>"$LOCK_FILE"
    flock -w $((STOP_TIMEOUT + 60)) 9 || die "another kafka.sh holds $LOCK_FILE"
    if pid=$(running_pid); then
        say "stopping broker (pid $pid)"
        stop_pid "$pid"
        say "stopped"
    else
        rm -f "$PID_FILE" "$PORT_FILE"
        if broker_ready; then
            say "a broker answers on $HOST:$PORT but was not started by this checkout (no pid file); leaving it alone"
        else
            say "not running"
        fi
    fi
}

cmd_status() {
    local pid
    if broker_ready; then
        if pid=$(running_pid); then
            say "running on $HOST:$PORT (pid $pid)"
        else
            say "running on $HOST:$PORT (not started by this checkout)"
        fi
        return 0
    fi
    if pid=$(running_pid); then
        if [[ "$(running_port)" != "$PORT" ]]; then
            say "not running on $HOST:$PORT (this checkout's broker, pid $pid, uses port $(running_port))"
        else
            say "process $pid is up but the broker is not ready on $HOST:$PORT"
        fi
    else
        say "not running"
    fi
    return 1
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop; cmd_start ;;
    *) usage ;;
esac
