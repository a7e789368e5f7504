#!/bin/sh
# Installs what pgvault needs to build and test, idempotently: Debian
# packages (the suite's S3 server is Ceph's RADOS Gateway: ceph-mon,
# ceph-osd, radosgw), the en_US.UTF-8 locale and the npm packages pinned
# in package-lock.json. A second run only checks and takes seconds.
set -eu

PACKAGES="build-essential pkg-config
lua5.4 liblua5.4-dev lua-cjson lua-cjson-dev lua-check
libpq-dev libcurl4-openssl-dev libsodium-dev libssl-dev openssl
libzstd-dev zstd liblz4-dev zlib1g-dev libexpat1-dev libreadline-dev
postgresql-15 postgresql-client-15 postgresql-contrib
age awscli python3 locales minisign
nodejs npm
clang libclang-rt-14-dev valgrind tmux time procps curl lcov
libisal-dev
pgbouncer
ceph-mon ceph-osd radosgw faketime"

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
# The machine may carry a newer Node.js than Debian's; any node >= 18 will do.
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    missing=$(echo "$missing" | tr ' ' '\n' | grep -v -x -e nodejs -e npm | tr '\n' ' ')
fi
missing=$(echo "$missing" | xargs)
if [ -n "$missing" ]; then
    echo "deps: installing Debian packages: $missing"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
fi

if ! locale -a 2>/dev/null | grep -qi '^en_US\.utf-\?8$'; then
    echo "deps: generating the en_US.UTF-8 locale"
    $SUDO sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' /etc/locale.gen
    grep -q '^en_US.UTF-8 UTF-8' /etc/locale.gen || echo 'en_US.UTF-8 UTF-8' | $SUDO tee -a /etc/locale.gen >/dev/null
    $SUDO locale-gen
fi

lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.pgvault-lock 2>/dev/null || true)" != "$lock_sum" ]; then
    echo "deps: installing npm packages from package-lock.json"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$lock_sum" > node_modules/.pgvault-lock
fi
