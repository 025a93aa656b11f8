#!/usr/bin/env bash
# KernelEvolve's GPU table on a CUDA machine that has PyTorch and Triton but no package index.
#
#   benchmarks/gpu.sh wheels [DIR]       here, with the dev venv and PyPI: REA's own wheel and the
#                                        wheels its kernel benchmarks need beyond PyTorch, Triton
#                                        and their usual company (pinned to this venv's versions)
#   benchmarks/gpu.sh kernels OUT [DIR]  there: install them, then `rea kernels bench --target
#                                        triton` (every operator, the template's default point and
#                                        BUDGET-1 more; TIME_LIMIT seconds of searches at most)
#   benchmarks/gpu.sh inference OUT [DIR] there: the ranker's inference and training end to end
#                                        with registry kernels (SEARCH_LIMIT seconds of searches)
#   benchmarks/gpu.sh tolerance OUT [DIR] there: the correctness check on long sums, with the
#                                        Triton templates' kernels on the GPU (about a minute)
#
# DIR defaults to .gpu-wheels; OUT gets each step's log and JSON (both relative to the
# repository's root, where the script runs). Settings come from the
# environment: GPU_PYTHON (the machine's Python, 3.12), PYTHON (the interpreter to install into
# and run, python3), TARGET (triton; cpu runs the same steps on this machine's CPU), BUDGET (1),
# TIME_LIMIT (420), SEARCH_LIMIT (150), OPS (operators, space-separated; default all). Each step
# is sized to end inside ten minutes. Candidates run confined by Landlock where the kernel has it,
# with the GPU driver's devices and folders granted; that has not run on a GPU yet, and
# CONFINE=false turns it off (--no-confine) if CUDA needs more. Their processes are forked from a
# fork server that has imported PyTorch (never CUDA); FORK_SERVER=false starts each afresh
# (--afresh), should forking get in the GPU runtime's way.
set -euo pipefail
cd "$(dirname "$0")/.."

step=${1:?"usage: $0 wheels [DIR] | kernels|inference|tolerance OUT [DIR]"}
python=${PYTHON:-python3}
# What the kernel benchmarks import that a CUDA image with PyTorch, Triton, numpy, scipy,
# scikit-learn, pyarrow, rich and psutil does not always hold.
extra=(pydantic pydantic-core annotated-types typing-inspection pymongo dnspython tenacity)
sandbox=()
[[ ${CONFINE:-true} == false ]] && sandbox+=(--no-confine)
[[ ${FORK_SERVER:-true} == false ]] && sandbox+=(--afresh)

install() {
    local wheels=$1
    ls "$wheels"/*.whl >/dev/null || { echo "no wheels in $wheels: run '$0 wheels' where pip can reach PyPI"; exit 2; }
    "$python" -m pip install -q --no-index --no-deps --no-compile --force-reinstall --disable-pip-version-check \
        "$wheels"/*.whl
}

device() {
    { date -u; nvidia-smi 2>/dev/null || echo "nvidia-smi: none"; "$python" -c \
        "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, \
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"; } | tee "$1/device.txt"
}

# A step on the GPU machine: the wheels installed, the device recorded, then the benchmark MODULE
# with these arguments, its log and JSON in OUT under the step's name.
measure() {
    local module=$1 out=${out:?"usage: $0 $step OUT [DIR]"}
    shift
    mkdir -p "$out"
    install "$wheels"
    device "$out"
    PYTHONUNBUFFERED=1 "$python" -m "$module" --target "${TARGET:-triton}" --json "$out/$step.json" "$@" 2>&1 |
        tee "$out/$step.txt"
}

out=${2:-}
wheels=${3:-.gpu-wheels}
case $step in
wheels)
    wheels=${2:-.gpu-wheels}
    bin=${VENV:-.venv}/bin
    rm -rf "$wheels" && mkdir -p "$wheels"
    "$bin/python" -m pip wheel -q --no-deps --disable-pip-version-check -w "$wheels" .
    pins=$("$bin/python" -c "import sys
from importlib.metadata import version
print(' '.join(f'{name}=={version(name)}' for name in sys.argv[1:]))" "${extra[@]}")
    platforms=()
    for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
        platforms+=(--platform "${tag}_x86_64")
    done
    # shellcheck disable=SC2086  # the pins are words
    "$bin/python" -m pip download -q --no-deps --only-binary=:all: --disable-pip-version-check \
        --python-version "${GPU_PYTHON:-3.12}" --implementation cp "${platforms[@]}" -d "$wheels" $pins
    ls -l "$wheels"
    ;;
kernels)
    measure rea_bench.kernels --budget "${BUDGET:-1}" --compare-seeds 0 --no-inference \
        --time-limit "${TIME_LIMIT:-420}" ${OPS:+--ops $OPS} "${sandbox[@]}"
    ;;
inference)
    measure rea_bench.inference --budget "${BUDGET:-1}" --search-time-limit "${SEARCH_LIMIT:-150}" \
        "${sandbox[@]}"
    ;;
tolerance)
    measure rea_bench.tolerance
    ;;
*)
    echo "unknown step $step: wheels, kernels, inference or tolerance" >&2
    exit 2
    ;;
esac
