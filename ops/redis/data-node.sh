#!/bin/sh
# Start a Redis data node of a Sentinel-managed group in the role the sentinels give it.
#
#   data-node.sh SELF_HOST SELF_PORT FIRST_PRIMARY_HOST FIRST_PRIMARY_PORT redis-server [args]
#
# Asks the sentinels in $REDIS_SENTINELS ("host:port host:port ...") where the primary of
# $REDIS_SENTINEL_MASTER (default mymaster) is. If one answers with another node, this one
# starts as that node's replica; if it names this node, or no sentinel answers (the group's
# first start), this one starts as the primary when it is FIRST_PRIMARY and as FIRST_PRIMARY's
# replica otherwise.
#
# A node that calls itself primary while the sentinels have promoted another would be made a
# replica only on their next INFO round, and a second failover in that window could promote
# it; if it came back without its data, the replica resynchronising from it would lose every
# write (docs/redis.md, "Bringing a failed primary back"). Asking first closes that window.
set -eu
self_host=$1
self_port=$2
first_host=$3
first_port=$4
shift 4

primary_host=""
primary_port=""
for sentinel in ${REDIS_SENTINELS:-}; do
    answer=$(timeout 3 redis-cli -h "${sentinel%:*}" -p "${sentinel##*:}" --raw \
        sentinel get-master-addr-by-name "${REDIS_SENTINEL_MASTER:-mymaster}" 2>/dev/null) || continue
    host=$(printf '%s\n' "$answer" | sed -n 1p)
    port=$(printf '%s\n' "$answer" | sed -n 2p)
    case "$port" in
        '' | *[!0-9]*) continue ;;  # no answer, or an error text
    esac
    primary_host=$host
    primary_port=$port
    break
done
if [ -z "$primary_host" ]; then
    primary_host=$first_host
    primary_port=$first_port
fi

if [ "$primary_host" = "$self_host" ] && [ "$primary_port" = "$self_port" ]; then
    echo "data-node.sh: starting as the primary" >&2
    exec "$@"
fi
echo "data-node.sh: starting as the replica of $primary_host:$primary_port" >&2
exec "$@" --replicaof "$primary_host" "$primary_port"
