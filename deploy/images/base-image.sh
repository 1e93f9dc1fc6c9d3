#!/usr/bin/env bash
# Make the base image that every Myelin image builds FROM when no registry is reachable:
# Debian bookworm (python3 is 3.11, matching our pins) from debootstrap, loaded with `docker import`.
#
#   deploy/images/base-image.sh [TAG]        (default myelin-base:bookworm)
#
# Cached twice, so reruns take a second: the image itself (skipped when `docker image inspect`
# finds it) and the rootfs tarball under $MYELIN_IMAGE_CACHE (default /tmp/myelin-image-cache),
# which survives a fresh clone and a fresh Docker data root. Needs root (debootstrap) and
# Debian's debootstrap package; DEBIAN_MIRROR overrides debootstrap's default mirror.
set -euo pipefail

tag=${1:-myelin-base:bookworm}
suite=bookworm
cache=${MYELIN_IMAGE_CACHE:-/tmp/myelin-image-cache}
tarball=$cache/debian-$suite-rootfs.tar
# python3-venv: the build stage makes the virtual environment; passwd: useradd for the non-root user.
include=python3,python3-venv,ca-certificates,passwd,tzdata

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag: present"
    exit 0
fi

if [[ ! -s $tarball ]]; then
    command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap; }
    mkdir -p "$cache"
    rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    echo "base image $tag: debootstrap $suite (minbase + $include) into $rootfs"
    # shellcheck disable=SC2086 # DEBIAN_MIRROR is optional: empty means debootstrap's default.
    debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" ${DEBIAN_MIRROR:-} >"$cache/debootstrap.log" 2>&1 ||
        { tail -20 "$cache/debootstrap.log"; exit 1; }
    # What an image does not need: package caches and lists, docs, man pages.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    tar --numeric-owner -C "$rootfs" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
fi

echo "base image $tag: docker import $tarball"
docker import \
    --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase --include=$include $suite" \
    "$tarball" "$tag" >/dev/null
docker image ls "$tag"
