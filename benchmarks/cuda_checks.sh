#!/usr/bin/env bash
# The checks that need a GPU: skal's CUDA tests and the benchmarks on CUDA.
#
# Usage (from the repository root, on a machine with a CUDA device and the
# project's dependencies importable):
#
#     bash benchmarks/cuda_checks.sh LOGDIR [PART ...]
#
# PART is any of: tests select pool tidal query_cost pool_million (default:
# all but pool_million, in that order). Each part's output goes to the
# terminal and to LOGDIR/PART.txt; a part that fails or runs past its time
# limit does not stop the others. The time limits (seconds) are sized for
# one H100/H200-class GPU.
set -u
logdir=${1:?usage: bash benchmarks/cuda_checks.sh LOGDIR [PART ...]}
shift
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(tests select pool tidal query_cost)
mkdir -p "$logdir"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

run() {
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $* (limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$logdir/$name.txt"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}

"$py" - <<'EOF' 2>&1 | tee "$logdir/versions.txt"
import sklearn, skorch, torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      "sklearn", sklearn.__version__, "skorch", skorch.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
EOF

for part in "${parts[@]}"; do
    case $part in
    tests)
        run tests 240 "$py" -m pytest -q -p no:cacheprovider -rs -k cuda \
            tests/test_classifier.py tests/test_strategies.py ;;
    select)
        run select 300 "$py" benchmarks/scale.py --parts select --device cuda ;;
    pool)
        run pool_uint8 150 "$py" benchmarks/pool_scale.py --device cuda \
            --n 200000 --pool uint8 --num-workers 4 --repeats 2 ;;
    pool_million)
        run pool_million 400 "$py" benchmarks/pool_scale.py --device cuda \
            --n 1000000 --repeats 1 ;;
    tidal)
        run tidal 180 "$py" benchmarks/tidal_overhead.py --device cuda \
            --repeats 3 --n-cnn 20000 --n-resnet 10000 ;;
    query_cost)
        run query_cost 300 "$py" benchmarks/query_cost.py --device cuda ;;
    *)
        echo "unknown part: $part" ;;
    esac
done
