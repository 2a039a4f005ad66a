#!/usr/bin/env bash
# Runs SeaweedFS (built by build.sh) as the S3 server of a test: master, volume server, filer
# and S3 gateway in one process, with one identity, its data and sockets under DIR, on ports
# the caller chose. The process becomes weed itself (exec), so the caller's pid is the
# server's.
#
#   server.sh WEED DIR BIND_ADDRESS ACCESS_KEY SECRET_KEY \
#             MASTER MASTER_GRPC VOLUME VOLUME_GRPC FILER FILER_GRPC S3 S3_GRPC
set -euo pipefail
if [ $# -ne 13 ]; then
    echo "usage: $0 WEED DIR BIND_ADDRESS ACCESS_KEY SECRET_KEY and 8 ports" >&2
    exit 2
fi
weed=$1 dir=$2 bind=$3 access=$4 secret=$5
shift 5
mkdir -p "$dir/data"
cat >"$dir/s3.json" <<JSON
{"identities": [{"name": "sluice",
  "credentials": [{"accessKey": "$access", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON
# The servers find each other on loopback and listen on BIND_ADDRESS (0.0.0.0: pods reach
# the S3 port at the node's address). Nothing else listens and nothing leaves the machine;
# volumes are small because tests store megabytes.
exec "$weed" server -ip=127.0.0.1 -ip.bind="$bind" -dir="$dir/data" \
    -master.port="$1" -master.port.grpc="$2" \
    -volume.port="$3" -volume.port.grpc="$4" \
    -filer -filer.port="$5" -filer.port.grpc="$6" -filer.localSocket="$dir/filer.sock" \
    -s3 -s3.port="$7" -s3.port.grpc="$8" -s3.localSocket="$dir/s3.sock" \
    -s3.config="$dir/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 \
    -master.telemetry=false -master.volumeSizeLimitMB=64 -volume.max=16 \
    -volume.preStopSeconds=0
