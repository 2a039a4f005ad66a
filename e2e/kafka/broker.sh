#!/usr/bin/env bash
# An Apache Kafka broker (or a three-node cluster) in KRaft mode for the connector tests,
# run on the machine's JDK from jars that Maven fetches into the cache. No Docker, no
# ZooKeeper: every node is broker and controller at once.
#
#   e2e/kafka/broker.sh fetch                        # jars into the cache; prints their dir
#   e2e/kafka/broker.sh start [--brokers 1|3] [--dir D] [--external-address ADDR]
#                                                    # prints the bootstrap servers
#   e2e/kafka/broker.sh stop  [--dir D] [--node N]   # all nodes, or node N
#   e2e/kafka/broker.sh start-node --dir D --node N  # a stopped node again, same ports and data
#   e2e/kafka/broker.sh status --dir D               # prints the bootstrap servers if all run
#   e2e/kafka/broker.sh topic --dir D --name T [--partitions N] [--replication R]
#                                                    # creates topic T
#
# Listeners are on 127.0.0.1, on free ports chosen at `start` and kept in D/node-N/, so a
# restarted node comes back where clients expect it. --external-address adds a listener
# bound to and advertised on ADDR (e.g. the local Kubernetes node's address, for pods).
# The state (data, logs, pids, configs) lives in D (default: a new temporary directory,
# printed on stderr). Jars: $SLUICE_CACHE/kafka/<version>/libs (SLUICE_CACHE defaults to
# /var/cache/sluice), fetched once with `mvn dependency:copy-dependencies` from pom.xml.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_VERSION=4.4.0
SLUICE_CACHE="${SLUICE_CACHE:-/var/cache/sluice}"
LIBS="$SLUICE_CACHE/kafka/$KAFKA_VERSION/libs"
# Fixed so that restarted nodes and re-formatted directories agree; any base64 UUID works.
CLUSTER_ID=c2x1aWNlLWthZmthLXRlcw

log() { printf '[kafka %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

fetch() {
  # Keyed by the pom's content, so a changed pom fetches again.
  local key
  key=$(sha256sum "$here/pom.xml" | cut -c1-16)
  if [[ -f "$LIBS/.complete" && $(cat "$LIBS/.complete") == "$key" ]]; then
    return
  fi
  command -v mvn >/dev/null || die "mvn is required to fetch the Kafka jars"
  log "fetching Kafka $KAFKA_VERSION jars into $LIBS"
  local tmp="$LIBS.tmp.$$"
  rm -rf "$tmp"
  mvn -q -B -f "$here/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >&2 ||
    die "mvn could not fetch the Kafka jars"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  echo "$key" >"$LIBS/.complete"
}

java_bin() {
  command -v java >/dev/null || die "java (17 or newer) is required to run Kafka"
  echo java
}

# free_ports N: N distinct free TCP ports on loopback (bound together, then released).
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

node_dir() { echo "$DIR/node-$1"; }

node_running() {
  local pidfile
  pidfile="$(node_dir "$1")/pid"
  [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

bootstrap() { cat "$DIR/bootstrap"; }

# write_config NODE BROKERS PORTS...: server.properties of one node.
write_config() {
  local node=$1 brokers=$2
  local d
  d="$(node_dir "$node")"
  mkdir -p "$d/data"
  local client_port controller_port external_port voters="" n
  client_port=$(sed -n "${node}p" "$DIR/client-ports")
  controller_port=$(sed -n "${node}p" "$DIR/controller-ports")
  external_port=$(sed -n "${node}p" "$DIR/external-ports" 2>/dev/null || true)
  for n in $(seq 1 "$brokers"); do
    voters+="${voters:+,}$n@127.0.0.1:$(sed -n "${n}p" "$DIR/controller-ports")"
  done
  local replication=1 min_isr=1
  if ((brokers >= 3)); then
    replication=3
    min_isr=2
  fi
  local listeners="PLAINTEXT://127.0.0.1:$client_port,CONTROLLER://127.0.0.1:$controller_port"
  local advertised="PLAINTEXT://127.0.0.1:$client_port"
  local protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  if [[ -n ${EXTERNAL_ADDRESS:-} ]]; then
    listeners+=",EXTERNAL://$EXTERNAL_ADDRESS:$external_port"
    advertised+=",EXTERNAL://$EXTERNAL_ADDRESS:$external_port"
    protocols+=",EXTERNAL:PLAINTEXT"
  fi
  cat >"$d/server.properties" <<EOF
process.roles=broker,controller
node.id=$node
controller.quorum.voters=$voters
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=$protocols
log.dirs=$d/data
num.partitions=1
default.replication.factor=$replication
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$replication
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$replication
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# Tests restart nodes and expect them back quickly.
controlled.shutdown.enable=true
unclean.leader.election.enable=false
log.segment.bytes=67108864
# Time-based retention goes by record timestamps, and generated Nexmark events are dated
# 2026-01-01: the tests' topics are kept whole.
log.retention.ms=-1
log.retention.bytes=-1
# The tests' transactions are short; a crashed run's leftovers expire within a minute.
transaction.max.timeout.ms=900000
transaction.abort.timed.out.transaction.cleanup.interval.ms=5000
share.coordinator.state.topic.replication.factor=$replication
share.coordinator.state.topic.min.isr=$min_isr
EOF
  cat >"$d/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $d/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.controller.name = org.apache.kafka.controller
logger.controller.level = info
EOF
}

java_opts() {
  local d=$1
  echo "-Xms256m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true" \
    "-Dlog4j2.configurationFile=$d/log4j2.properties -Dkafka.logs.dir=$d"
}

format_node() {
  local node=$1 d
  d="$(node_dir "$node")"
  # shellcheck disable=SC2046
  CLASSPATH="$LIBS/*" "$(java_bin)" $(java_opts "$d") kafka.tools.StorageTool format \
    --cluster-id "$CLUSTER_ID" --config "$d/server.properties" --ignore-formatted \
    >"$d/format.log" 2>&1 || { cat "$d/format.log" >&2; die "formatting node $node failed"; }
}

start_node() {
  local node=$1 d
  d="$(node_dir "$node")"
  [[ -f $d/server.properties ]] || die "node $node has no configuration in $DIR"
  if node_running "$node"; then
    return
  fi
  # shellcheck disable=SC2046
  CLASSPATH="$LIBS/*" setsid "$(java_bin)" $(java_opts "$d") kafka.Kafka "$d/server.properties" \
    >>"$d/stdout.log" 2>&1 </dev/null &
  echo $! >"$d/pid"
}

# wait_ready NODE: the node logged that it started and accepts connections.
wait_ready() {
  local node=$1 d deadline=$((SECONDS + 120))
  d="$(node_dir "$node")"
  local port
  port=$(sed -n "${node}p" "$DIR/client-ports")
  until grep -q "Kafka Server started" "$d/server.log" 2>/dev/null &&
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    node_running "$node" || { tail -40 "$d/server.log" "$d/stdout.log" >&2 || true; die "node $node exited"; }
    ((SECONDS < deadline)) || { tail -40 "$d/server.log" >&2 || true; die "node $node not ready after 120s"; }
    sleep 0.2
  done
}

# stop_nodes NODE...: asks the nodes to shut down together (the last of a cluster cannot
# shut down cleanly once the others are gone, so they are not stopped one by one), then
# kills whatever still runs after 30 s.
stop_nodes() {
  local node d pids=() deadline
  for node in "$@"; do
    node_running "$node" || continue
    pids+=("$(cat "$(node_dir "$node")/pid")")
  done
  ((${#pids[@]})) && kill -TERM "${pids[@]}" 2>/dev/null || true
  deadline=$((SECONDS + 30))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
      if ((SECONDS >= deadline)); then
        log "process $pid did not stop in 30s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
  done
  for node in "$@"; do
    d="$(node_dir "$node")"
    rm -f "$d/pid"
    # The log says the node started; a restart must wait for the next such line.
    [[ -f $d/server.log ]] && mv "$d/server.log" "$d/server.log.$(date +%s%N)"
  done
  return 0
}

cmd=${1:-}
shift || true
BROKERS=1
DIR=""
NODE=""
EXTERNAL_ADDRESS=""
TOPIC=""
while (($#)); do
  case $1 in
    --brokers) BROKERS=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    --node) NODE=$2; shift 2 ;;
    --external-address) EXTERNAL_ADDRESS=$2; shift 2 ;;
    --name) TOPIC=$2; shift 2 ;;
    --partitions) PARTITIONS=$2; shift 2 ;;
    --replication) REPLICATION=$2; shift 2 ;;
    *) die "unknown argument: $1" ;;
  esac
done

case $cmd in
  fetch)
    fetch
    echo "$LIBS"
    ;;
  start)
    [[ $BROKERS == 1 || $BROKERS == 3 ]] || die "--brokers must be 1 or 3"
    fetch
    if [[ -z $DIR ]]; then
      DIR=$(mktemp -d -t sluice-kafka.XXXXXX)
      log "state in $DIR"
    fi
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    if [[ ! -f $DIR/bootstrap ]]; then
      read -r -a ports <<<"$(free_ports $((BROKERS * 3)))"
      printf '%s\n' "${ports[@]:0:BROKERS}" >"$DIR/client-ports"
      printf '%s\n' "${ports[@]:BROKERS:BROKERS}" >"$DIR/controller-ports"
      printf '%s\n' "${ports[@]:$((BROKERS * 2)):BROKERS}" >"$DIR/external-ports"
      echo "$BROKERS" >"$DIR/brokers"
      servers=""
      for p in "${ports[@]:0:BROKERS}"; do servers+="${servers:+,}127.0.0.1:$p"; done
      for n in $(seq 1 "$BROKERS"); do
        write_config "$n" "$BROKERS"
        format_node "$n"
      done
      echo "$servers" >"$DIR/bootstrap"
    fi
    BROKERS=$(cat "$DIR/brokers")
    for n in $(seq 1 "$BROKERS"); do start_node "$n"; done
    for n in $(seq 1 "$BROKERS"); do wait_ready "$n"; done
    log "Kafka $KAFKA_VERSION: $BROKERS node(s) ready at $(bootstrap)"
    bootstrap
    ;;
  start-node)
    [[ -n $DIR && -n $NODE ]] || die "start-node needs --dir and --node"
    start_node "$NODE"
    wait_ready "$NODE"
    bootstrap
    ;;
  stop)
    [[ -n $DIR ]] || die "stop needs --dir"
    [[ -f $DIR/brokers ]] || exit 0
    if [[ -n $NODE ]]; then
      stop_nodes "$NODE"
    else
      # shellcheck disable=SC2046
      stop_nodes $(seq 1 "$(cat "$DIR/brokers")")
    fi
    ;;
  topic)
    [[ -n $DIR && -n $TOPIC ]] || die "topic needs --dir and --name"
    CLASSPATH="$LIBS/*" "$(java_bin)" -Xmx256m -Dlog4j2.level=warn \
      org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap)" --create \
      --topic "$TOPIC" --partitions "${PARTITIONS:-1}" \
      --replication-factor "${REPLICATION:-1}" >&2
    ;;
  status)
    [[ -n $DIR && -f $DIR/brokers ]] || die "status needs the --dir of a started cluster"
    for n in $(seq 1 "$(cat "$DIR/brokers")"); do
      node_running "$n" || die "node $n is not running"
    done
    bootstrap
    ;;
  *)
    die "usage: broker.sh fetch | start [--brokers 1|3] [--dir D] [--external-address ADDR] | stop --dir D [--node N] | start-node --dir D --node N | status --dir D | topic --dir D --name T [--partitions N] [--replication R]"
    ;;
esac
