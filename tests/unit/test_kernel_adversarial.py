"""Candidates that cheat, each written as candidate source text: every one must be rejected,
with a reason that names the cheat, and a hang, a crash or a runaway allocation must become a
verdict while the evaluator goes on judging good kernels in this same process."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from rea.kernels import Candidate
from rea_kernel import checks
from rea_kernel.evaluator import Evaluation, Settings, _Run, evaluate
from rea_kernel.harness import CORRECTNESS, Guard, probe, probe_positions, probe_problem
from rea_kernel.operators import get_operator
from rea_kernel.sandbox import Limits, SandboxedProcess, Verdict
from rea_kernel.targets import get_target

CPU = get_target("cpu")
LAYER_NORM = get_operator("layer_norm")
pytestmark = pytest.mark.skipif(CPU.unavailable() is not None, reason=str(CPU.unavailable()))

# The honest shim's run() stays reachable as _honest_run; each cheat wraps it.
WRAP = "\n_honest_run = run\n"

MEMOISED_BY_SHAPE = (
    WRAP
    + """
_outputs = {}


def run(x, weight, bias, **attributes):
    if tuple(x.shape) not in _outputs:
        _outputs[tuple(x.shape)] = _honest_run(x, weight, bias, **attributes)
    return _outputs[tuple(x.shape)]
"""
)

MUTATES_INPUT = (
    WRAP
    + """
def run(x, weight, bias, **attributes):
    out = _honest_run(x, weight, bias, **attributes)
    x.copy_(out)  # "reuses the input buffer as scratch"
    return out
"""
)

ONE_SHAPE_ONLY = (
    WRAP
    + """
def run(x, weight, bias, **attributes):
    if tuple(x.shape) == (33, 64):
        return _honest_run(x, weight, bias, **attributes)
    return torch.zeros(x.shape)
"""
)

RETURNS_EARLY = (
    WRAP
    + """
import threading
import time


def run(x, weight, bias, **attributes):
    out = torch.empty(x.shape)

    def finish():
        time.sleep(0.02)
        out.copy_(_honest_run(x, weight, bias, **attributes))

    threading.Thread(target=finish).start()
    return out
"""
)

RETURNS_EARLY_ON_LARGE_SHAPES = (
    WRAP
    + """
import threading
import time


def run(x, weight, bias, **attributes):
    if x.shape[0] < 1024:  # the correctness shapes: be honest
        return _honest_run(x, weight, bias, **attributes)
    out = torch.empty(x.shape)

    def finish():
        time.sleep(0.02)
        out.copy_(_honest_run(x, weight, bias, **attributes))

    threading.Thread(target=finish).start()
    return out
"""
)

CACHES_ONCE_WARM = (
    WRAP
    + """
_timed = []


def run(x, weight, bias, **attributes):
    if x.shape[0] != 64:  # the correctness shapes: be honest
        return _honest_run(x, weight, bias, **attributes)
    _timed.append(x)
    if len(_timed) <= 11:  # honest through the first round: 1 warm-up and 10 timed runs
        run.last = _honest_run(x, weight, bias, **attributes)
    return run.last
"""
)

TENSOR_SUBCLASS = (
    WRAP
    + """
class _Checked(torch.Tensor):
    pass


def run(x, weight, bias, **attributes):
    return _honest_run(x, weight, bias, **attributes).as_subclass(_Checked)
"""
)

CALLS_THE_REFERENCE = """
def run(x, weight, bias, **attributes):
    from rea_kernel.operators import get_operator

    return get_operator("layer_norm").reference(x, weight, bias, **attributes)
"""

HUNTS_OBJECTS = (
    WRAP
    + """
import gc


def run(x, weight, bias, **attributes):
    for thing in gc.get_objects():
        if isinstance(thing, torch.Tensor) and thing.shape == x.shape and thing is not x:
            return thing
    return _honest_run(x, weight, bias, **attributes)
"""
)

TAMPERS_WITH_TORCH = (
    WRAP
    + """
import torch as _torch


def run(x, weight, bias, **attributes):
    open(_torch.__file__, "a").close()  # appends nothing: harmless if the guard ever let it through
    return _honest_run(x, weight, bias, **attributes)
"""
)

REMOVES_A_FILE_OUTSIDE = (
    WRAP
    + """
import os


def run(x, weight, bias, **attributes):
    try:
        os.remove("/tmp/rea-kernel-guard-probe-that-does-not-exist")
    except FileNotFoundError:
        pass
    return _honest_run(x, weight, bias, **attributes)
"""
)

STARTS_A_PROCESS = (
    WRAP
    + """
import subprocess


def run(x, weight, bias, **attributes):
    subprocess.run(["true"], check=False)
    return _honest_run(x, weight, bias, **attributes)
"""
)

READS_THE_EVALUATOR = (
    WRAP
    + """
import os


def run(x, weight, bias, **attributes):
    with open(f"/proc/{os.getppid()}/environ", "rb") as secrets:
        secrets.read()
    return _honest_run(x, weight, bias, **attributes)
"""
)

PEEKS_AT_FRAMES = (
    WRAP
    + """
import sys


def run(x, weight, bias, **attributes):
    sys._getframe(1).f_locals
    return _honest_run(x, weight, bias, **attributes)
"""
)

FAST_ON_ONE_SHAPE = (
    WRAP
    + """
import time


def run(x, weight, bias, **attributes):
    if tuple(x.shape) != (2048, 256):
        time.sleep(0.1)
    return _honest_run(x, weight, bias, **attributes)
"""
)

SEES_ONLY_A_SCRUBBED_ENVIRONMENT = (
    WRAP
    + """
import os
from pathlib import Path


def run(x, weight, bias, **attributes):
    leaked = [name for name in os.environ if name.startswith("REA_") or "s3cr3t" in os.environ[name]]
    if leaked or not Path(os.environ["HOME"]).resolve().is_relative_to(Path.cwd().resolve()):
        raise RuntimeError(f"the sandbox leaked {leaked} or a real HOME")
    return _honest_run(x, weight, bias, **attributes)
"""
)

RUNS_ON_HUGE_PAGES = (
    WRAP
    + """
import os


def run(x, weight, bias, **attributes):
    if os.environ.get("THP_MEM_ALLOC_ENABLE") != "1":
        raise RuntimeError("not asked to allocate on huge pages")
    return _honest_run(x, weight, bias, **attributes)
"""
)

ALLOCATES_ON_HUGE_PAGES = """
import torch

tensor = torch.ones(16 << 20)  # 64 MiB, written
with open("/proc/self/smaps_rollup") as smaps:
    print(next(int(line.split()[1]) for line in smaps if line.startswith("AnonHugePages:")))
"""

HANGS = """
def run(x, weight, bias, **attributes):
    while True:
        pass
"""

ABORTS = """
import os


def run(x, weight, bias, **attributes):
    os.abort()
"""

HOARDS_MEMORY = """
def run(x, weight, bias, **attributes):
    hoard = [torch.ones(1 << 30) for _ in range(16)]  # 64 GiB, 4 GiB at a time, all touched
    return hoard[0]
"""

NULL_WRITE_CPP = r"""#include <cstdint>

extern "C" void layer_norm(const float*, const float*, const float*, float*, int64_t, int64_t, float) {
  *reinterpret_cast<volatile float*>(static_cast<uintptr_t>(8)) = 1.0f;
}
"""

HOARDS_MEMORY_CPP = r"""#include <cstddef>
#include <cstdint>
#include <vector>

extern "C" void layer_norm(const float*, const float*, const float*, float* out, int64_t, int64_t, float) {
  std::vector<float> hoard(static_cast<size_t>(1) << 37);  // 512 GiB
  out[0] = hoard[7];
}
"""


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kernel-cache")


def quick(cache_dir: Path, **overrides: object) -> Settings:
    """Few trials and repeats, small shapes, no torch.compile, one thread (steady on a busy
    machine): the checks, not the precision."""
    base: dict[str, object] = {
        "trials": 2,
        "threads": 1,
        "warmup": 1,
        "repeats": 3,
        "time_compiled_reference": False,
        "cache_dir": cache_dir,
        "cache_flush_bytes": 4 << 20,
        "benchmark_shapes": ({"rows": 64, "dim": 32},),
        "limits": Limits(wall_seconds=60, memory_bytes=4 << 30),
    }
    return Settings.model_validate(base | overrides)


def honest() -> Candidate:
    return CPU.render(LAYER_NORM.name, CPU.default_params(LAYER_NORM.name))


def cheat(shim: str, cpp: str | None = None) -> Candidate:
    """The honest layer-norm candidate with ``shim`` appended to its kernel.py (and its C++
    replaced by ``cpp``, if given)."""
    sources = dict(honest().sources)
    sources["kernel.py"] += shim
    if cpp is not None:
        sources["kernel.cpp"] = cpp
    return honest().model_copy(update={"sources": sources})


def judged(candidate: Candidate, settings: Settings) -> Evaluation:
    evaluation = evaluate(candidate, LAYER_NORM, settings)
    assert evaluation.device.startswith("cpu: ")
    return evaluation


def assert_still_judges_honest_kernels(cache_dir: Path) -> None:
    evaluation = judged(honest(), quick(cache_dir, benchmark_shapes=()))
    assert evaluation.verdict is Verdict.PASSED, evaluation.reason


@pytest.mark.parametrize(
    ("shim", "named"),
    [
        pytest.param(MEMOISED_BY_SHAPE, "returned a cached output", id="memoised-by-shape"),
        pytest.param(MUTATES_INPUT, "modified its input", id="mutates-input"),
        pytest.param(RETURNS_EARLY, "returned before its work was done", id="returns-early"),
        pytest.param(TENSOR_SUBCLASS, "tensor subclass _Checked", id="tensor-subclass"),
        pytest.param(CALLS_THE_REFERENCE, "imported rea_kernel", id="imports-the-reference"),
        pytest.param(HUNTS_OBJECTS, "gc.get_objects", id="hunts-for-objects"),
        pytest.param(READS_THE_EVALUATOR, "/environ, outside its directory", id="reads-the-evaluator"),
        pytest.param(PEEKS_AT_FRAMES, "evaluator's stack frames", id="peeks-at-frames"),
        pytest.param(TAMPERS_WITH_TORCH, "for writing, outside its directory", id="tampers-with-torch"),
        pytest.param(REMOVES_A_FILE_OUTSIDE, "outside its directory (os.remove)", id="removes-a-file"),
        pytest.param(STARTS_A_PROCESS, "started a process (subprocess.Popen: /", id="starts-a-process"),
    ],
)
def test_cheats_are_rejected_in_correctness(cache_dir: Path, shim: str, named: str) -> None:
    evaluation = judged(cheat(shim), quick(cache_dir))
    assert evaluation.verdict is Verdict.REJECTED
    assert named in evaluation.reason
    assert not evaluation.timings and evaluation.cost is None  # rejected before anything was timed


RETURNS_A_LIST = (
    WRAP
    + """
def run(grad_output, x, weight, output, **attributes):
    return list(_honest_run(grad_output, x, weight, output, **attributes))
"""
)

RETURNS_TOO_FEW = (
    WRAP
    + """
def run(grad_output, x, weight, output, **attributes):
    return _honest_run(grad_output, x, weight, output, **attributes)[:2]
"""
)

OUTPUTS_SHARE_MEMORY = (
    WRAP
    + """
def run(grad_output, x, weight, output, **attributes):
    grad_x, grad_weight, grad_bias = _honest_run(grad_output, x, weight, output, **attributes)
    both = torch.cat([grad_weight, grad_bias])  # one allocation, two right-looking views
    return grad_x, both[: weight.numel()], both[weight.numel() :]
"""
)

MEMOISES_ONE_OUTPUT = (
    WRAP
    + """
_kept = {}


def run(grad_output, x, weight, output, **attributes):
    grad_x, grad_weight, grad_bias = _honest_run(grad_output, x, weight, output, **attributes)
    return grad_x, _kept.setdefault(tuple(x.shape), grad_weight), grad_bias
"""
)


@pytest.mark.parametrize(
    ("shim", "named"),
    [
        pytest.param(RETURNS_A_LIST, "returned a list, not a tuple of 3 tensors", id="returns-a-list"),
        pytest.param(RETURNS_TOO_FEW, "returned a tuple, not a tuple of 3 tensors", id="returns-too-few"),
        pytest.param(
            OUTPUTS_SHARE_MEMORY, "output 2: returned a tensor that shares memory", id="outputs-share-memory"
        ),
        pytest.param(MEMOISES_ONE_OUTPUT, "output 1: max abs error", id="memoises-one-output"),
    ],
)
def test_a_backward_with_several_outputs_is_held_to_each(cache_dir: Path, shim: str, named: str) -> None:
    """Layer norm's backward returns three gradients: each is checked as a kernel's one output is,
    and a result that is not exactly a tuple of three is refused before its values are read."""
    operator = get_operator("layer_norm_backward")
    candidate = CPU.render(operator.name, CPU.default_params(operator.name))
    cheating = candidate.model_copy(
        update={"sources": {**candidate.sources, "kernel.py": candidate.sources["kernel.py"] + shim}}
    )
    evaluation = evaluate(cheating, operator, quick(cache_dir))
    assert evaluation.verdict is Verdict.REJECTED
    assert named in evaluation.reason
    assert not evaluation.timings


@pytest.mark.parametrize("fork_server", [True, False], ids=["forked", "afresh"])
def test_an_evaluation_judges_alike_whether_its_processes_are_forked_or_started_afresh(
    cache_dir: Path, fork_server: bool
) -> None:
    """The harness's processes come from a fork server by default; started afresh, each
    imports PyTorch itself. Either way an honest kernel passes and is timed, and a cheat is
    caught. Forked, torch.compile is timed too: Inductor, imported after the fork, writes in the
    cache folder the harness gives it, the only one its confinement lets it write in."""
    settings = quick(cache_dir, fork_server=fork_server, time_compiled_reference=fork_server)
    evaluation = judged(honest(), settings)
    assert evaluation.verdict is Verdict.PASSED, evaluation.reason
    assert [timing.compiled_seconds is not None for timing in evaluation.timings] == [fork_server]
    assert not fork_server or any((cache_dir / "inductor").iterdir())
    cheating = judged(cheat(MUTATES_INPUT), settings)
    assert cheating.verdict is Verdict.REJECTED and "modified its input" in cheating.reason


def test_a_kernel_correct_on_one_shape_only_is_rejected(cache_dir: Path) -> None:
    evaluation = judged(cheat(ONE_SHAPE_ONLY), quick(cache_dir))
    assert evaluation.verdict is Verdict.REJECTED
    # correct on its hard-coded shape, and (with nothing to compute) on the empty one
    assert "incorrect on 4 of 6 shapes" in evaluation.reason
    assert "correct only on ['d32-r0-relu', 'd64-r64']" in evaluation.reason
    failing = {check.bucket for check in evaluation.correctness if not check.passed}
    assert len(failing) == 4 and "d64-r64" not in failing


def test_returning_early_only_where_timed_is_caught_in_the_timed_region(cache_dir: Path) -> None:
    settings = quick(cache_dir, benchmark_shapes=({"rows": 2048, "dim": 64},))
    evaluation = judged(cheat(RETURNS_EARLY_ON_LARGE_SHAPES), settings)
    assert evaluation.verdict is Verdict.REJECTED
    assert "returned before its work was done" in evaluation.reason
    assert "timed region" in evaluation.reason
    assert all(check.passed for check in evaluation.correctness)


def test_timing_takes_turns_and_every_round_is_judged(cache_dir: Path) -> None:
    """The repeats are shared among rounds in which the candidate and the baselines take turns;
    a kernel honest in the first round and caching in a later one is caught there."""
    settings = quick(cache_dir, repeats=4, rounds=2, correctness_shapes=({"rows": 7, "dim": 17},))
    evaluation = judged(honest(), settings)
    assert evaluation.verdict is Verdict.PASSED, evaluation.reason
    assert [(timing.repeats, timing.rounds) for timing in evaluation.timings] == [(4, 2)]
    assert judged(honest(), quick(cache_dir, repeats=2, rounds=5)).timings[0].rounds == 2

    settings = quick(cache_dir, repeats=30, rounds=3, correctness_shapes=({"rows": 7, "dim": 17},))
    evaluation = judged(cheat(CACHES_ONCE_WARM), settings)
    assert evaluation.verdict is Verdict.REJECTED
    assert "while timing" in evaluation.reason
    assert all(check.passed for check in evaluation.correctness)


def test_the_baselines_start_beside_the_candidate_and_are_stopped_while_it_is_timed(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both processes start at once, so that their imports overlap the candidate's trials, and
    then only the process being timed runs: the candidate's and the baselines', in turn."""
    seen: list[str] = []
    candidates: list[SandboxedProcess] = []
    outcome, time_candidate, baselines = _Run.outcome, _Run.time_candidate, _Run.baselines

    def watched_outcome(run: _Run, process: SandboxedProcess, directory: Path, phase: str) -> Any:
        if phase == CORRECTNESS:
            seen.append(f"trials reported, baselines started: {run.baseline is not None}")
        return outcome(run, process, directory, phase)

    def watched_time_candidate(run: _Run, process: SandboxedProcess, *args: Any) -> Any:
        assert run.baseline is not None
        candidates.append(process)
        seen.append(f"candidate timed, baselines stopped: {run.baseline[0].paused}")
        return time_candidate(run, process, *args)

    def watched_baselines(run: _Run, timing: dict[str, Any]) -> Any:
        seen.append(f"baselines timed, candidate stopped: {candidates[-1].paused}")
        return baselines(run, timing)

    monkeypatch.setattr(_Run, "outcome", watched_outcome)
    monkeypatch.setattr(_Run, "time_candidate", watched_time_candidate)
    monkeypatch.setattr(_Run, "baselines", watched_baselines)
    # A speedup that looks too good would be measured again (another round of the same), as a
    # tiny shape's on a busy machine can: not this test's subject.
    settings = quick(cache_dir, repeats=2, rounds=2, suspicious_speedup=1e9)
    evaluation = judged(honest(), settings)
    assert evaluation.verdict is Verdict.PASSED, evaluation.reason
    assert seen == [
        "trials reported, baselines started: True",
        "candidate timed, baselines stopped: True",
        "baselines timed, candidate stopped: True",
        "baselines timed, candidate stopped: True",
        "candidate timed, baselines stopped: True",
    ]


def test_a_speedup_that_holds_on_one_shape_only_is_rejected(cache_dir: Path) -> None:
    """Beyond the bound (set low here, so an honest-speed kernel on the benchmark shape
    exceeds it) the speedup is re-measured on new shapes, where this one sleeps."""
    benchmark = {"rows": 2048, "dim": 256}
    settings = quick(
        cache_dir,
        suspicious_speedup=0.2,
        correctness_shapes=(benchmark,),
        benchmark_shapes=(benchmark,),
        repeats=5,
    )
    evaluation = judged(cheat(FAST_ON_ONE_SHAPE), settings)
    assert evaluation.verdict is Verdict.REJECTED, evaluation.reason
    assert "did not hold on new shapes" in evaluation.reason
    purposes = [timing.purpose for timing in evaluation.timings]
    assert purposes == ["superseded", "benchmark", "neighbour", "neighbour"]
    assert all(timing.shape != benchmark for timing in evaluation.timings[2:])


def test_a_speedup_that_holds_on_new_shapes_passes(cache_dir: Path) -> None:
    settings = quick(cache_dir, suspicious_speedup=1e-3, correctness_shapes=({"rows": 7, "dim": 17},))
    evaluation = judged(honest(), settings)
    assert evaluation.verdict is Verdict.PASSED, evaluation.reason
    assert [timing.purpose for timing in evaluation.timings] == [
        "superseded",
        "benchmark",
        "neighbour",
        "neighbour",
    ]


def test_the_candidate_sees_a_scrubbed_environment(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REA_API_KEY", "s3cr3t")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    evaluation = judged(cheat(SEES_ONLY_A_SCRUBBED_ENVIRONMENT), quick(cache_dir, benchmark_shapes=()))
    assert evaluation.verdict is Verdict.PASSED, evaluation.reason


def test_huge_pages_are_asked_for_only_when_set(cache_dir: Path) -> None:
    """The candidate's and the baselines' processes get the same environment."""
    evaluation = judged(cheat(RUNS_ON_HUGE_PAGES), quick(cache_dir, huge_pages=True))
    assert evaluation.verdict is Verdict.PASSED, evaluation.reason
    evaluation = judged(cheat(RUNS_ON_HUGE_PAGES), quick(cache_dir))
    assert evaluation.verdict is Verdict.CRASHED and "not asked" in evaluation.reason


@pytest.mark.skipif(
    not Path("/proc/self/smaps_rollup").exists()
    or "[never]" in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text(),
    reason="needs Linux with transparent huge pages",
)
def test_pytorch_puts_large_tensors_on_huge_pages_when_asked() -> None:
    """What ``huge_pages`` relies on, with this PyTorch and this kernel."""

    def huge_kib(asked: str) -> int:
        environment = {**os.environ, "THP_MEM_ALLOC_ENABLE": asked}
        done = subprocess.run(
            [sys.executable, "-c", ALLOCATES_ON_HUGE_PAGES], env=environment, capture_output=True, text=True
        )
        return int(done.stdout.strip())

    assert huge_kib("1") >= 32 << 10
    assert huge_kib("0") < 32 << 10


@pytest.mark.parametrize(
    ("shim", "cpp", "verdict", "named"),
    [
        pytest.param(HANGS, None, Verdict.TIMED_OUT, "wall-clock limit", id="hangs"),
        pytest.param(ABORTS, None, Verdict.CRASHED, "SIGABRT", id="aborts"),
        pytest.param("", NULL_WRITE_CPP, Verdict.CRASHED, "SIGSEGV", id="null-write-in-cpp"),
        pytest.param(HOARDS_MEMORY, None, Verdict.OUT_OF_MEMORY, "can't allocate memory", id="hoards-memory"),
        pytest.param(
            "", HOARDS_MEMORY_CPP, Verdict.OUT_OF_MEMORY, "allocation failed", id="hoards-memory-in-cpp"
        ),
    ],
)
def test_process_failures_become_verdicts(
    cache_dir: Path, shim: str, cpp: str | None, verdict: Verdict, named: str
) -> None:
    settings = quick(cache_dir, limits=Limits(wall_seconds=4, memory_bytes=3 << 30), benchmark_shapes=())
    evaluation = judged(cheat(shim, cpp), settings)
    assert evaluation.verdict is verdict, evaluation.reason
    assert named in evaluation.reason
    assert_still_judges_honest_kernels(cache_dir)


def test_source_that_does_not_compile_is_rejected_with_the_compiler_error(cache_dir: Path) -> None:
    evaluation = judged(cheat("", 'extern "C" void layer_norm( {'), quick(cache_dir))
    assert evaluation.verdict is Verdict.REJECTED
    assert "does not compile" in evaluation.reason and "error" in evaluation.reason


def test_a_candidate_may_start_only_its_targets_run_time_programs(tmp_path: Path) -> None:
    """On a GPU, Triton's compiler runs inside the candidate's process at first launch: the
    guard lets the target's named programs start there and nothing else."""
    compiler = str(Path(shutil.which("true") or "/bin/true").resolve())
    guard = Guard(tmp_path, os.open(tmp_path / "violations", os.O_WRONLY | os.O_CREAT), programs=[compiler])
    guard("subprocess.Popen", (None, ["true", "--version"], None, None))
    guard("subprocess.Popen", (compiler, ["anything"], None, None))
    with pytest.raises(PermissionError, match="started a process"):
        guard("subprocess.Popen", (None, ["sh", "-c", "true"], None, None))
    with pytest.raises(PermissionError, match="started a process"):
        guard("os.posix_spawn", ("/bin/sh", ["sh"], {}))
    assert "sh" in (tmp_path / "violations").read_text()


ALLOCATES_OUTPUTS = """
import sys
import torch
from rea.memory import keep_freed_memory
from rea_kernel.harness import settle_allocator

if sys.argv[1] == "settled":
    settle_allocator()
elif sys.argv[1] == "kept":
    assert keep_freed_memory()
inputs = torch.randn(5_000_000)  # fresh inputs, then a fresh 40 MB output, as a timed run has
output = torch.empty(10_000_000).fill_(1.0)
address = output.data_ptr()
for line in open("/proc/self/maps"):
    low, high = (int(bound, 16) for bound in line.split()[0].split("-"))
    if low <= address < high:
        print("heap" if line.rstrip().endswith("[heap]") else "mapped")
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="settles glibc's allocator only")
def test_a_settled_allocator_keeps_large_outputs_on_its_heap() -> None:
    """The harness keeps freed memory: a 40 MB output comes from the heap, which is never trimmed,
    not from a mapping made for it and handed back when it is freed (paging that back in cost
    4-8 ms of a 20 MB output's time before); jobs and benchmarks keep it the same way. Whether a
    freed block is reused also depends on the heap's layout, so this checks where blocks come
    from, not a count of page faults."""

    def placed(mode: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", ALLOCATES_OUTPUTS, mode], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    assert placed("settled") == "heap"
    assert placed("kept") == "heap"
    assert placed("default") == "mapped"  # beyond glibc's largest mmap threshold, 32 MiB


def test_the_timed_region_reads_every_page_and_a_later_write_is_caught() -> None:
    """The timer stops after one element of every page is read, at places drawn for each run;
    an output written after that read differs from the copy taken right after."""
    output = (torch.zeros(10_000), torch.full((3,), float("nan")), torch.empty(0))
    generator = torch.Generator().manual_seed(0)
    positions = probe_positions(output, generator)
    drawn_for, where = positions[0]
    assert drawn_for == 10_000 and [at // 1024 for at in where.tolist()] == list(range(10))  # 4 KiB pages
    assert not torch.equal(where, probe_positions(output, generator)[0][1])
    probed = probe(output, positions)
    assert probe_problem(probed, tuple(tensor.clone() for tensor in output)) is None  # NaN equals NaN
    output[0][where[7]] = 1.0
    problem = probe_problem(probed, tuple(tensor.clone() for tensor in output))
    assert problem is not None and "returned before its work was done" in problem


def test_row_indices_are_compared_exactly_not_within_a_float_tolerance() -> None:
    """A sparse gradient's rows name rows: one off by one is wrong however large the id (a
    relative tolerance of 1e-5 passes it beyond 100,000), in the full comparison and in the timed
    runs' fingerprints alike, while its values keep their tolerance."""
    tolerance = get_operator("embedding_bag_pooled_sparse_backward").tolerance(torch.float32)
    rows, values = torch.tensor([150_000, 2_000_000, 2_500_000]), torch.randn(3, 4)
    expected = checks.expect((rows, values), tolerance, (rows, values.abs() * 100))
    shifted = rows.clone()
    shifted[1] += 1
    nearly = values + 1e-6
    assert checks.compare((rows, nearly), expected).matches
    wrong = checks.compare((shifted, values), expected)
    assert not wrong.matches and wrong.reason == "output 0: differs from the reference by 1"
    for seed in range(5):
        honest = checks.fingerprint((rows, nearly), seed)
        assert checks.fingerprint_matches(honest, expected, seed)
        cheat = checks.fingerprint((shifted, values), seed)
        assert not checks.fingerprint_matches(cheat, expected, seed)
