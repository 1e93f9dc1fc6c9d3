#!/usr/bin/env bash
# Assemble the build context of one image: every wheel it installs, downloaded or built on the host,
# so that `docker build` needs no network (no registry or package index is reachable from builds here).
#
#   deploy/images/context.sh services|training|console cpu|gpu [DIR]  (console: cpu only)   (default DIR: deploy/images/context/IMAGE-VARIANT)
#
# DIR/wheels/ holds our own distributions (built from this checkout) and every dependency at the
# version requirements/constraints.txt pins; DIR/constraints.txt is what the Dockerfile installs with
# (plus requirements/gpu.txt for GPU services); DIR/bin/ the scripts the image adds. A GPU training
# context takes the CUDA build of torch==2.13.0 from $TORCH_INDEX_URL (the PyTorch wheel index for
# one CUDA version), which this machine cannot reach.
set -euo pipefail
cd "$(dirname "$0")/../.."

image=${1:?usage: context.sh services|training|console cpu|gpu [DIR]}
variant=${2:?usage: context.sh services|training|console cpu|gpu [DIR]}
dir=${3:-deploy/images/context/$image-$variant}
python=${PYTHON:-.venv/bin/python}

case $image/$variant in
services/cpu) requirements=(./protos/python "./services[cpu]") ;;
services/gpu) requirements=(./protos/python "./services[gpu]") ;;
training/cpu | training/gpu) requirements=(./protos/python ./clients/python ./training) ;;
console/cpu) requirements=(./console) ;;
*) echo "context.sh: unknown image/variant $image/$variant" >&2 && exit 2 ;;
esac

find "$dir" -mindepth 1 -not -name .gitignore -delete 2>/dev/null || true
mkdir -p "$dir/wheels" "$dir/bin"
cat requirements/constraints.txt >"$dir/constraints.txt"
[[ $image/$variant == services/gpu ]] && cat requirements/gpu.txt >>"$dir/constraints.txt"
extra=()
if [[ $image/$variant == training/gpu ]]; then
    extra=(--extra-index-url "${TORCH_INDEX_URL:?set TORCH_INDEX_URL to the PyTorch wheel index of your CUDA version}")
fi

# Fixed timestamps make our own wheels byte-identical from run to run, so an unchanged checkout
# hits Docker's build cache instead of reinstalling the environment.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}
# `pip wheel` resolves like an install (our distributions from this checkout, everything else pinned)
# and leaves one wheel per distribution: downloaded ones as they are, ours built here.
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$dir/wheels" \
    -c "$dir/constraints.txt" "${extra[@]}" "${requirements[@]}" \
    2> >(grep -v "is ignored: it is neither" >&2)

cp deploy/images/healthcheck.py "$dir/bin/myelin-healthcheck"
cp deploy/images/train_all.py "$dir/bin/myelin-train-all"
chmod 755 "$dir/bin/"*
echo "$dir: $(find "$dir/wheels" -name '*.whl' | wc -l) wheels, $(du -sh "$dir" | cut -f1)"
