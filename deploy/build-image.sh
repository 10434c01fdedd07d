#!/bin/sh
# Build deploy/Dockerfile for real with buildah where no Docker engine runs (a VM or a
# container without one), then run `python -m bot check` inside the image.
#
#   sudo deploy/build-image.sh [TAG]        (or: sudo make image)
#
# Needs root, buildah and, when the base image cannot be pulled, debootstrap
# (Debian: apt-get install buildah debootstrap). Chroot isolation and vfs storage work
# without a container runtime, overlayfs or nested namespaces. The image is built in the
# docker format, which keeps its HEALTHCHECK (the OCI format drops it).
#
# When the Dockerfile's base (python:3.11.x-slim-bookworm) cannot be pulled, an equivalent
# base is made: Debian bookworm from debootstrap with Debian's python3.11, and a venv at
# /usr/local so that `python` and `pip` are on PATH as in the official image. Set
# DEBIAN_MIRROR to use a mirror other than debootstrap's default.
#
# Not part of `make test`/CI: it downloads a Debian base and the bot's dependencies.
set -eu

TAG=${1:-localhost/warmth-bot:latest}
REPO=$(cd "$(dirname "$0")/.." && pwd)
BASE=$(sed -n 's/^FROM[[:space:]]\{1,\}\([^[:space:]]*\).*/\1/p' "$REPO/deploy/Dockerfile" | head -n 1)
LOCAL_BASE=localhost/warmth-base:bookworm-python3.11
export BUILDAH_ISOLATION=chroot
export STORAGE_DRIVER=vfs
B="buildah --storage-driver vfs"

say() { printf '%s: %s\n' "build-image" "$*" >&2; }

FROM_ARG=""
if $B inspect --type image "$BASE" >/dev/null 2>&1; then
    say "base $BASE is already in local storage"
elif $B pull --quiet "$BASE" >/dev/null 2>&1; then
    say "pulled $BASE"
else
    say "cannot pull $BASE; using a debootstrap'd Debian bookworm base ($LOCAL_BASE)"
    FROM_ARG="--from $LOCAL_BASE"
    if ! $B inspect --type image "$LOCAL_BASE" >/dev/null 2>&1; then
        rootfs=$(mktemp -d /var/tmp/warmth-rootfs.XXXXXX)
        trap 'rm -rf "$rootfs"' EXIT
        say "debootstrap bookworm into $rootfs (a few minutes)"
        # shellcheck disable=SC2086  # DEBIAN_MIRROR is empty or one URL
        debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-distutils,ca-certificates \
            bookworm "$rootfs" ${DEBIAN_MIRROR:-} >/dev/null
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        ctr=$($B from scratch)
        mnt=$($B mount "$ctr")
        tar -C "$rootfs" -cf - . | tar -C "$mnt" -xf -
        $B umount "$ctr" >/dev/null
        # python and pip on PATH at /usr/local/bin, as in the official python image.
        $B run "$ctr" -- /usr/bin/python3.11 -m venv /usr/local
        $B config --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
            --env LANG=C.UTF-8 --cmd python3 "$ctr"
        $B commit --quiet --rm "$ctr" "$LOCAL_BASE" >/dev/null
        rm -rf "$rootfs"
        trap - EXIT
    fi
fi

# pip behind a TLS-inspecting proxy: the CA file named by PIP_CERT, mounted read-only.
CERT_ARGS=""
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
    CERT_ARGS="--volume $PIP_CERT:$PIP_CERT:ro --build-arg PIP_CERT=$PIP_CERT"
    say "pip uses the CA file $PIP_CERT (PIP_CERT)"
fi

say "building $TAG"
# shellcheck disable=SC2086  # FROM_ARG and CERT_ARGS are empty or whole words
$B bud --isolation chroot --format docker --layers $FROM_ARG $CERT_ARGS \
    -f "$REPO/deploy/Dockerfile" -t "$TAG" "$REPO"

health=$($B inspect --type image --format '{{.Docker.Config.Healthcheck.Test}}' "$TAG")
say "HEALTHCHECK: $health"
case "$health" in
*"python -m bot check"*) ;;
*) say "the image has no HEALTHCHECK"; exit 1 ;;
esac

# The image's configuration, as the Dockerfile and compose rely on it.
config=$($B inspect --type image --format \
    '{{.Docker.Config.User}}|{{.Docker.Config.WorkingDir}}|{{.Docker.Config.StopSignal}}|{{.Docker.Config.Cmd}}|{{.Docker.Config.Volumes}}|{{.Docker.Config.Env}}' "$TAG")
say "config: $config"
case "$config" in
0\|* | root\|* | \|*) say "the image runs as root"; exit 1 ;;
esac
for needed in "|/app|" "|SIGTERM|" "[python -m bot]" "/data" "DATABASE_PATH=/data/bot.sqlite3"; do
    case "$config" in
    *"$needed"*) ;;
    *) say "the image's configuration lacks $needed"; exit 1 ;;
    esac
done

ctr=$($B from --quiet "$TAG")
trap '$B rm "$ctr" >/dev/null 2>&1 || true' EXIT
# The installed package runs, not a copy of the source.
$B run --user 10001:10001 --workingdir /app "$ctr" -- \
    python -c 'import bot, os; print("bot from", os.path.dirname(bot.__file__)); print("/app holds", os.listdir("/app"))'
# The data volume is writable by the bot's own (non-root) user.
$B run --user 10001:10001 --workingdir /app "$ctr" -- \
    python -c 'import os, pathlib; pathlib.Path(os.environ["DATABASE_PATH"]).write_text("x"); print("/data writable by uid", os.getuid())'
# Unconfigured, the check names the missing secrets and exits 2, without the network.
set +e
$B run --user 10001:10001 --workingdir /app "$ctr" -- python -m bot check
status=$?
set -e
say "python -m bot check exited $status (2 = settings missing, as expected without .env)"
# With the secrets given (and TELEGRAM_API_URL when a fake or a proxy answers), the same
# check asks Telegram's getMe: CHECK_ENV="TELEGRAM_BOT_TOKEN=... SEGMIND_API_KEY=..."
if [ -n "${CHECK_ENV:-}" ]; then
    envs=""
    for pair in $CHECK_ENV; do envs="$envs --env $pair"; done
    # shellcheck disable=SC2086
    $B run --user 10001:10001 --workingdir /app $envs "$ctr" -- python -m bot check
    say "configured check passed"
elif [ "$status" -ne 2 ]; then
    exit 1
fi
say "done: $TAG"
