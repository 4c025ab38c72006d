#!/usr/bin/env bash
# A real S3 server for tests: single-node Ceph (mon + memstore OSD) with the RADOS Gateway on
# 127.0.0.1, everything under one directory, stopped by pid.
#
#   tests/s3/rgw.sh start DIR [PORT]   # prints the endpoint; writes DIR/env (AWS_* variables)
#   tests/s3/rgw.sh stop DIR
#
# Needs Debian's ceph-mon ceph-osd radosgw ceph-common uuid-runtime (tools/setup.sh --s3).
set -euo pipefail
cmd=$1 dir=$2
port=${3:-7480}

stop() {
  for pidfile in "$dir"/run/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
  done
  for pidfile in "$dir"/run/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR [PORT]" >&2; exit 2; }

mkdir -p "$dir"/{run,log,mon,osd,tmp}
dir=$(cd "$dir" && pwd)
fsid=$(uuidgen)
monport=$((port + 1000))
conf="$dir/ceph.conf"
cat > "$conf" <<CONF
[global]
fsid = $fsid
mon_host = 127.0.0.1:$monport
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_crush_chooseleaf_type = 0
ms_bind_ipv6 = false
# With auth "none", radosgw's mon session needs the plain crc connection mode.
ms_mon_client_mode = crc
ms_client_mode = crc
ms_mon_service_mode = crc
ms_service_mode = crc
ms_cluster_mode = crc
ms_mon_cluster_mode = crc
run_dir = $dir/run
pid_file = $dir/run/\$name.pid
admin_socket = $dir/run/\$name.asok
log_file = $dir/log/\$name.log
mon_data = $dir/mon/\$name
osd_data = $dir/osd/\$name
keyring = $dir/keyring
mon_warn_on_pool_no_redundancy = false
[osd.0]
osd_objectstore = memstore
memstore_device_bytes = ${TQ_RGW_MEMSTORE_BYTES:-2147483648}
osd_max_object_name_len = 460
osd_max_object_namespace_len = 64
[client.rgw.a]
rgw_frontends = beast endpoint=127.0.0.1:$port
rgw_data = $dir/rgw
CONF
export CEPH_CONF="$conf"
C=(--conf "$conf")
monmaptool --create --add a "127.0.0.1:$monport" --fsid "$fsid" "$dir/monmap" >/dev/null
ceph-mon "${C[@]}" --mkfs -i a --monmap "$dir/monmap" >/dev/null 2>&1
ceph-mon "${C[@]}" -i a
osd_uuid=$(uuidgen)
for _ in $(seq 100); do ceph "${C[@]}" osd create "$osd_uuid" >/dev/null 2>&1 && break; sleep 0.2; done
mkdir -p "$dir/osd/osd.0"
ceph-osd "${C[@]}" -i 0 --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1
ceph "${C[@]}" osd crush add-bucket node1 host >/dev/null 2>&1
ceph "${C[@]}" osd crush move node1 root=default >/dev/null 2>&1
ceph "${C[@]}" osd crush add osd.0 1.0 host=node1 >/dev/null 2>&1
ceph-osd "${C[@]}" -i 0 2>>"$dir/log/osd-start.log"
mkdir -p "$dir/rgw"
radosgw "${C[@]}" -n client.rgw.a
for _ in $(seq 300); do
  if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then break; fi
  sleep 0.1
done
key=TQTESTACCESSKEY
secret=tqtestsecretkey0123456789
for _ in $(seq 100); do
  radosgw-admin "${C[@]}" user create --uid=test --display-name=test --access-key="$key" \
    --secret="$secret" >/dev/null 2>&1 && break
  sleep 0.2
done
cat > "$dir/env" <<ENV
export AWS_ACCESS_KEY_ID=$key
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=us-east-1
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$port
ENV
echo "http://127.0.0.1:$port"
