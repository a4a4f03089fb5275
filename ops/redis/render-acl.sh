#!/bin/sh
# Render the Redis users file for redis-server --aclfile: ops/redis/users.acl with each role's
# placeholder replaced by "#" and the SHA-256 of that role's password, read from the
# environment (REDIS_WORKER_PASSWORD, REDIS_PRODUCER_PASSWORD, REDIS_FLOWER_PASSWORD,
# REDIS_PASSWORD for the admin), and without its comment and blank lines (Redis takes none in
# an ACL file). No password is written anywhere. tests/harness/redis_acl.py does the same
# for native runs and the tests.
#
#   render-acl.sh RULES OUTPUT
set -eu
rules=$1
output=$2
sha() {
    if [ -z "$2" ]; then
        echo "render-acl.sh: $1 is not set" >&2
        exit 2
    fi
    printf '%s' "$2" | sha256sum | cut -d ' ' -f 1
}
worker=$(sha REDIS_WORKER_PASSWORD "${REDIS_WORKER_PASSWORD:-}")
producer=$(sha REDIS_PRODUCER_PASSWORD "${REDIS_PRODUCER_PASSWORD:-}")
flower=$(sha REDIS_FLOWER_PASSWORD "${REDIS_FLOWER_PASSWORD:-}")
admin=$(sha REDIS_PASSWORD "${REDIS_PASSWORD:-}")
umask 077
sed -e '/^#/d' -e '/^[[:space:]]*$/d' -e "s/@WORKER@/#$worker/" -e "s/@PRODUCER@/#$producer/" \
    -e "s/@FLOWER@/#$flower/" -e "s/@ADMIN@/#$admin/" "$rules" > "$output"
