#!/usr/bin/env bash
# Builds the local images the docker add-on tests run, since no container registry can be reached
# in CI: a Debian bookworm base made with debootstrap, and on it stand-ins for the official images
# that honour their interface (environment, command, data path, port, stop signal):
#
#   dynosim-test/postgres:15   like postgres:NN     POSTGRES_USER/PASSWORD/DB, data in /var/lib/postgresql/data
#   dynosim-test/redis:7       like redis:7         `redis-server ARGS…`, data in /data; Debian's redis-server
#                                                   is built with TLS, as the official image's is (rediss://)
#   dynosim-test/search:8      like elasticsearch:8 dynosim's search stand-in on 9200, data in
#                                                   /usr/share/elasticsearch/data
#   dynosim-test/python:3.11   like python:3.11-slim Debian's python3 (3.11) and python3-venv: the base of
#                                                   `dynosim image` in tests (DYNOSIM_IMAGE_BASE)
#
# Idempotent and quick on a rerun: the rootfs tarball is cached in /var/cache/dynosim-images, the base
# image is imported once, and `docker build` reuses its layer cache. Installs docker.io and debootstrap
# when they are missing and starts dockerd when no engine answers. Root only (apt, debootstrap).
# Then: DYNOSIM_POSTGRES_IMAGE=dynosim-test/postgres:15 DYNOSIM_REDIS_IMAGE=dynosim-test/redis:7
#       DYNOSIM_SEARCH_IMAGE=dynosim-test/search:8 DYNOSIM_IMAGE_BASE=dynosim-test/python:3.11
#       (the tests set these themselves).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=/var/cache/dynosim-images
# the Debian mirror this machine's apt already uses (first URIs line of its deb822 sources, else sources.list)
apt_mirror() {
    local uri
    uri=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '$2 !~ /security/ {print $2; exit}')
    [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    printf '%s' "$uri"
}
MIRROR=${DEBIAN_MIRROR:-$(apt_mirror)}
SUITE=bookworm
BASE=dynosim-test/debian:$SUITE
ROOTFS_TAR=$CACHE/$SUITE-minbase.tar
export DEBIAN_FRONTEND=noninteractive

say() { printf 'docker-images: %s\n' "$*" >&2; }

# --- the engine and the tools ----------------------------------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    say "no Docker engine answers; starting dockerd (log: /var/log/dockerd.log)"
    setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 120); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker info >/dev/null 2>&1 || { say "dockerd did not answer within 60 s; see /var/log/dockerd.log"; exit 1; }
fi

# --- the base: a minimal Debian, cached as a tarball, imported once ----------------------------------
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    if [ ! -s "$ROOTFS_TAR" ]; then
        say "debootstrap $SUITE (minbase) from $MIRROR"
        mkdir -p "$CACHE"
        root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
        trap 'rm -rf "$root"' EXIT
        debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
            || { say "debootstrap failed; see $CACHE/debootstrap.log"; exit 1; }
        # Services must not start while packages install; no recommends, no package lists kept.
        printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
        chmod 755 "$root/usr/sbin/policy-rc.d"
        printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' > "$root/etc/apt/apt.conf.d/90dynosim"
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        tar --numeric-owner -C "$root" -cf "$ROOTFS_TAR.tmp" .
        mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
        rm -rf "$root"
        trap - EXIT
    fi
    say "docker import $ROOTFS_TAR as $BASE"
    docker import "$ROOTFS_TAR" "$BASE" >/dev/null
fi

# --- the images ------------------------------------------------------------------------------------
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

build() {  # build TAG DIR: quiet unless it fails
    local tag=$1 dir=$2 log
    log=$(mktemp)
    if ! DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$dir" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        say "building $tag failed"
        exit 1
    fi
    rm -f "$log"
    say "$tag ready"
}

# Postgres: the official image's entrypoint interface, reduced to what dynosim uses.
mkdir -p "$ctx/postgres"
cat > "$ctx/postgres/Dockerfile" <<EOF
FROM $BASE
RUN mkdir -p /etc/postgresql-common \\
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf \\
 && apt-get update -qq && apt-get install -y -qq postgresql-15 >/dev/null \\
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:\$PATH PGDATA=/var/lib/postgresql/data
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
STOPSIGNAL SIGINT
EXPOSE 5432
CMD ["postgres"]
EOF
cat > "$ctx/postgres/entrypoint.sh" <<'EOF'
#!/bin/sh
# Like the official postgres image: initdb into $PGDATA on first boot with POSTGRES_USER (superuser),
# POSTGRES_PASSWORD and POSTGRES_DB, password authentication from the network, then run postgres as
# PID 1, listening on every interface of the container. The server is not reachable over TCP until
# the database is ready.
set -eu
if [ "${1:-}" != postgres ]; then exec "$@"; fi
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres /var/run/postgresql
    chmod 2775 /var/run/postgresql
    find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "error: database is uninitialized and POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    pwfile=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" --username="$user" --pwfile="$pwfile" -E UTF8 --no-locale --no-sync >/dev/null
    rm -f "$pwfile"
    printf 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nhost all all all scram-sha-256\n' \
        > "$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    if [ "$db" != postgres ]; then
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
        psql -X -q -v ON_ERROR_STOP=1 -U "$user" -d postgres -c "CREATE DATABASE \"$db\""
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    fi
    echo "PostgreSQL init process complete; ready for start up."
fi
exec "$@"
EOF
chmod 755 "$ctx/postgres/entrypoint.sh"
build dynosim-test/postgres:15 "$ctx/postgres"

# Redis: `redis-server ARGS…` as the redis user, data in /data (the working directory).
mkdir -p "$ctx/redis"
cat > "$ctx/redis/Dockerfile" <<EOF
FROM $BASE
RUN apt-get update -qq && apt-get install -y -qq redis-server >/dev/null && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /data && chown redis:redis /data
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
EXPOSE 6379
CMD ["redis-server"]
EOF
cat > "$ctx/redis/entrypoint.sh" <<'EOF'
#!/bin/sh
set -eu
if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find /data \! -user redis -exec chown redis:redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
exec "$@"
EOF
chmod 755 "$ctx/redis/entrypoint.sh"
build dynosim-test/redis:7 "$ctx/redis"
# the add-on serves rediss:// (--tls-port): an image whose redis-server lacks TLS would fail at every start
docker run --rm --entrypoint sh dynosim-test/redis:7 -c 'ldd "$(command -v redis-server)" | grep -q libssl' \
    || { say "dynosim-test/redis:7: its redis-server has no TLS support"; exit 1; }

# Search: dynosim's stand-in. Its modules import only each other (relatively), so the folder is copied
# as a top-level package of its own; the build checks that it still imports that way.
mkdir -p "$ctx/search"
cp -r dynosim/addons/search "$ctx/search/dynosim_search"
find "$ctx/search" -name __pycache__ -prune -exec rm -rf '{}' +
cat > "$ctx/search/Dockerfile" <<EOF
FROM $BASE
RUN apt-get update -qq && apt-get install -y -qq python3 >/dev/null && rm -rf /var/lib/apt/lists/*
COPY dynosim_search /opt/dynosim/dynosim_search
RUN cd /opt/dynosim && python3 -c 'import dynosim_search.__main__'
ENV PYTHONPATH=/opt/dynosim PYTHONUNBUFFERED=1
EXPOSE 9200
CMD ["python3", "-m", "dynosim_search", "--data", "/usr/share/elasticsearch/data", "--host", "0.0.0.0", "--port", "9200"]
EOF
build dynosim-test/search:8 "$ctx/search"

# Python: the base `dynosim image` builds an app's image on in tests (DYNOSIM_IMAGE_BASE), in place of
# python:3.11-slim; bookworm's python3 is 3.11, the minor version dynosim's own slugs are built with,
# and python3-venv gives the image's virtualenv its pip when the slug's packages must be installed.
mkdir -p "$ctx/python"
cat > "$ctx/python/Dockerfile" <<EOF
FROM $BASE
RUN apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null && rm -rf /var/lib/apt/lists/*
RUN python3 -c 'import sys, venv, ensurepip; assert sys.version_info[:2] == (3, 11), sys.version'
CMD ["python3"]
EOF
build dynosim-test/python:3.11 "$ctx/python"
