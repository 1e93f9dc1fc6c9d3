#!/usr/bin/env bash
# Build the two images of one variant and print how long each took and how big it is.
#
#   deploy/images/build.sh [cpu|gpu]        (make images [VARIANT=gpu])
#
# CPU: FROM $MYELIN_BASE_IMAGE, by default the debootstrap image base-image.sh makes (no registry
# needed); MYELIN_BASE_IMAGE=debian:bookworm-slim works wherever Docker Hub is reachable.
# GPU: FROM CUDA runtime images (nvidia/cuda, from Docker Hub) and, for training, the CUDA build of
# torch from $TORCH_INDEX_URL. Tags: myelin-serving:VARIANT and myelin-training:VARIANT; myelin-console:cpu.
set -euo pipefail
cd "$(dirname "$0")/../.."

variant=${1:-cpu}
case $variant in
cpu)
    services_base=${MYELIN_BASE_IMAGE:-myelin-base:bookworm}
    training_base=$services_base
    [[ $services_base == myelin-base:* ]] && deploy/images/base-image.sh "$services_base"
    ;;
gpu)
    services_base=${MYELIN_GPU_BASE_IMAGE:-nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04}
    training_base=${MYELIN_GPU_TRAINING_BASE_IMAGE:-nvidia/cuda:12.8.1-base-ubuntu22.04}
    ;;
*) echo "build.sh: variant is cpu or gpu, not $variant" >&2 && exit 2 ;;
esac

build() { # image base: context, then docker build, timed
    local image=$1 base=$2 started
    started=$(date +%s)
    deploy/images/context.sh "$image" "$variant"
    local tag=myelin-${image/services/serving}:$variant
    docker build --quiet -f "$image/Dockerfile" -t "$tag" \
        --build-arg BASE_IMAGE="$base" --build-arg VARIANT="$variant" "deploy/images/context/$image-$variant" >/dev/null
    echo "$tag: built in $(($(date +%s) - started)) s (context included), $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')"
}
build services "$services_base"
build training "$training_base"
# The console calls the services over HTTP: one CPU image serves both variants.
[[ $variant == cpu ]] && build console "$services_base"
