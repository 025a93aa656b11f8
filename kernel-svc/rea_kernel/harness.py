"""The sandboxed side of an evaluation: the evaluator runs ``python -m rea_kernel.harness`` in a
fresh directory holding ``job.json`` (and, for a candidate, its files under ``candidate/``).
Each phase leaves ``PHASE.pt`` (plain tensors and numbers, for ``torch.load(weights_only=True)``)
and reports its name on the pipe the sandbox gave it.

A ``candidate`` process has two phases:

- ``correctness``: for each trial in ``job.json``, make the inputs from the trial's seed, keep
  copies, run the candidate once, and record its output as it was when ``run`` returned,
  whether it changed afterwards, and whether the inputs did. Nothing is judged here: the
  evaluator compares, in its own process.
- ``timing``, only when the evaluator, having judged the outputs, sends the timing job on stdin
  (so the candidate cannot see the timing seeds in advance): time the candidate on each shape,
  every timed run on fresh inputs (a new seed), the caches flushed before it. The timed region
  ends after one element of every page of every output, at a place in the page drawn for that
  run, has been read (:func:`probe`): a kernel must have finished its work when it returns, as
  every caller reads its output, without the whole output's copy (which the callers' kernels
  do not pay, and which would hide the kernels' difference under a cost both sides pay alike)
  being timed. The copy is taken right after, and the probed elements must equal it.

Both kinds keep the memory they free (:func:`settle_allocator`), so no timed call pays for
paging in memory the process had handed back. A ``baseline`` process times the eager reference
and ``torch.compile`` of it the same way. It
runs only trusted code, never in a candidate's process and never while one runs, so a
candidate can neither see a reference output nor slow the reference down.

In a candidate process, an audit hook (which Python lets no one remove) refuses and records
what a kernel has no business doing: importing REA's code (where the reference lives),
inspecting the interpreter's objects or this harness's frames, reading outside its directory
and the Python installation, starting processes, signalling others, opening sockets, loading
libraries from elsewhere.
"""

from __future__ import annotations

import ctypes
import faulthandler
import importlib.util
import json
import os
import shutil
import site
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from rea_kernel import checks
from rea_kernel.operators import Operator, Result, Shape, get_operator
from rea_kernel.sandbox import PROGRAM_PATH, REPORT_FD_VARIABLE

CORRECTNESS = "correctness"
TIMING = "timing"
VIOLATIONS = "violations.jsonl"
SETTLE_SECONDS = 0.2
"""How long the harness waits before looking at outputs again, to catch work still in flight."""

Kernel = Callable[..., Any]


def is_rea_module(name: str) -> bool:
    root = name.split(".")[0]
    return root == "rea" or root.startswith("rea_")


class Guard:
    """The audit hook of a candidate process: refuses the events a kernel has no use for and
    appends each to ``violations.jsonl`` through a descriptor opened before the candidate ran."""

    _PROCESS_EVENTS = frozenset(
        {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty"}
    )
    _INSPECTION_EVENTS = frozenset(
        {"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames"}
    )
    _OTHER_EVENTS = frozenset(
        {
            "import",
            "open",
            "os.listdir",
            "os.scandir",
            "sys._getframe",
            "ctypes.dlopen",
            "os.kill",
            "os.killpg",
        }
    )
    _CHANGE_EVENTS = frozenset(
        {
            "os.remove",
            "os.rename",
            "os.rmdir",
            "os.mkdir",
            "os.chmod",
            "os.chown",
            "os.truncate",
            "os.link",
            "os.symlink",
            "os.utime",
            "shutil.rmtree",
        }
    )
    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    _WATCHED = (
        _PROCESS_EVENTS
        | _INSPECTION_EVENTS
        | _OTHER_EVENTS
        | _CHANGE_EVENTS
        | {"socket.connect", "socket.bind"}
    )
    _SYSTEM_FILES = ("/proc/self/", "/sys/", "/dev/null", "/dev/urandom")

    def __init__(
        self, directory: Path, record_fd: int, programs: Sequence[str] = (), readable: Sequence[str] = ()
    ) -> None:
        """``programs`` and ``readable`` are what the target's toolchain needs while a kernel
        runs (:meth:`rea_kernel.targets.Target.run_time_programs`): none on the CPU."""
        self.directory = directory.resolve()
        self.record_fd = record_fd
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()}
        self.toolchain = tuple(Path(folder).resolve() for folder in readable)
        self.readable = (self.directory, *(Path(prefix).resolve() for prefix in prefixes), *self.toolchain)
        self.programs = frozenset(programs)
        self.system_files = (*self._SYSTEM_FILES, f"/proc/{os.getpid()}/")

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event not in self._WATCHED:
            return
        reason = self._refusal(event, args)
        if reason is not None:
            os.write(self.record_fd, (json.dumps({"event": event, "reason": reason}) + "\n").encode())
            raise PermissionError(f"refused by the KernelEvolve sandbox: {reason}")

    def _refusal(self, event: str, args: tuple[Any, ...]) -> str | None:
        if event == "import":
            return f"imported {args[0]}, part of REA (the evaluator)" if is_rea_module(str(args[0])) else None
        if event in self._INSPECTION_EVENTS:
            return f"called {event}, inspecting the interpreter's objects (the evaluator's state)"
        if event == "sys._getframe":
            looked_at = args[0].f_code.co_filename
            return "inspected the evaluator's stack frames" if looked_at == __file__ else None
        if event in self._PROCESS_EVENTS:
            program = self._program(event, args)
            return None if program in self.programs else f"started a process ({event}: {program})"
        if event in ("os.kill", "os.killpg"):
            return None if args[0] in (0, os.getpid()) else f"sent a signal to process {args[0]}"
        if event.startswith("socket."):
            return f"used the network ({event})"
        if event == "ctypes.dlopen":
            inside = self._inside(args[0], (self.directory, *self.toolchain))
            return None if inside else f"loaded a library outside its directory: {args[0]}"
        if event in self._CHANGE_EVENTS:
            paths = [arg for arg in args[:2] if isinstance(arg, str | bytes | os.PathLike)]
            outside = [path for path in paths if not self._inside(path, (self.directory,))]
            return f"changed {outside[0]!r} outside its directory ({event})" if outside else None
        path = args[0]
        if event == "open" and self._writes(args) and not isinstance(path, int):
            inside = self._inside(path, (self.directory,)) or os.fsdecode(path) == "/dev/null"
            return None if inside else f"opened {path} for writing, outside its directory"
        if isinstance(path, int) or self._inside(path, self.readable) or self._system(path):
            return None
        return f"{'opened' if event == 'open' else 'listed'} {path}, outside its directory"

    @staticmethod
    def _program(event: str, args: tuple[Any, ...]) -> str | None:
        """The resolved path of the program a process event starts (None where it names none)."""
        named: object = args[0] if args else None
        if event == "subprocess.Popen" and named is None and len(args) > 1:
            argv = args[1]
            named = argv if isinstance(argv, str | bytes) else next(iter(argv or ()), None)
        if not isinstance(named, str | bytes | os.PathLike):
            return None
        found = shutil.which(os.fsdecode(named), path=PROGRAM_PATH)
        return None if found is None else str(Path(found).resolve())

    @classmethod
    def _writes(cls, args: tuple[Any, ...]) -> bool:
        """Whether an ``open`` event asks to write: by its mode string or its ``os.open`` flags."""
        mode, flags = (*args[1:3], None, None)[:2]
        return bool(
            (isinstance(mode, str) and any(c in mode for c in "wax+"))
            or (isinstance(flags, int) and flags & cls._WRITE_FLAGS)
        )

    def _system(self, path: object) -> bool:
        return isinstance(path, str | bytes | os.PathLike) and os.fsdecode(path).startswith(self.system_files)

    @staticmethod
    def _inside(path: object, roots: tuple[Path, ...]) -> bool:
        if not isinstance(path, str | bytes | os.PathLike):
            return False
        resolved = Path(os.fsdecode(path)).resolve()
        return any(resolved.is_relative_to(root) for root in roots)


def forget_rea_modules() -> None:
    """Drop REA's modules from the import cache, so a candidate that imports them is seen
    doing so (an import served from the cache raises no audit event)."""
    for name in [name for name in sys.modules if is_rea_module(name)]:
        del sys.modules[name]


def load_candidate(path: Path) -> Kernel:
    spec = importlib.util.spec_from_file_location("candidate_kernel", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = getattr(module, "run", None)
    if not callable(run):
        raise AttributeError("kernel.py defines no run(*inputs, **attributes)")
    return run


def make_inputs(
    operator: Operator[Any], shape: Shape, dtype: torch.dtype, seed: int, device: str
) -> tuple[torch.Tensor, ...]:
    """The operator's inputs for ``seed`` (made on the CPU, as the evaluator remakes them), on
    the target's device."""
    inputs = operator.make_inputs(shape, dtype, torch.Generator().manual_seed(seed))
    return tuple(tensor.to(device) for tensor in inputs)


def to_host(result: Result) -> Result:
    """A copy in CPU memory: what crosses to the evaluator, and never changes after."""
    if isinstance(result, torch.Tensor):
        return result.detach().to("cpu", copy=True)
    return tuple(tensor.detach().to("cpu", copy=True) for tensor in result)


def snapshot(result: Result) -> Result:
    """A copy on the result's device, taken as soon as the timed region ends."""
    return result.clone() if isinstance(result, torch.Tensor) else tuple(tensor.clone() for tensor in result)


PAGE_BYTES = 4096
""":func:`probe` reads one element per page: a lazily mapped output is made to exist, and an
output being written after ``run`` returned differs from its copy somewhere, at a cost of a
sixty-fourth of the output's cache lines."""

Positions = tuple[tuple[int, torch.Tensor], ...]
"""For each output: the size it had when the positions were drawn, and the flat positions."""

Probe = tuple[tuple[torch.Tensor, torch.Tensor], ...]
"""For each output: the flat positions read, and the values found there."""


def _outputs(result: object) -> list[torch.Tensor]:
    """The tensors among a kernel's result, whatever it returned (the checks judge the rest)."""
    if not isinstance(result, torch.Tensor | tuple):
        return []
    return [tensor for tensor in checks.tensors(result) if isinstance(tensor, torch.Tensor)]


def probe_positions(result: object, generator: torch.Generator) -> Positions:
    """One position in every page of every output of ``result``'s sizes, drawn anew for each
    run before its timer starts (a kernel cannot know which elements will be read)."""
    positions = []
    for tensor in _outputs(result):
        per_page = max(1, PAGE_BYTES // tensor.element_size())
        starts = torch.arange(0, tensor.numel(), per_page)
        offsets = torch.randint(0, per_page, starts.shape, generator=generator)
        where = (starts + offsets).clamp_(max=max(0, tensor.numel() - 1))
        positions.append((tensor.numel(), where.to(tensor.device)))
    return tuple(positions)


def probe(result: object, positions: Positions) -> Probe:
    """The values at ``positions`` (see :func:`probe_positions`), read in the timed region."""
    read = []
    for tensor, (drawn_for, where) in zip(_outputs(result), positions, strict=False):
        if tensor.numel():  # a wrong size (rejected by the checks anyway) folds the positions in
            inside = where if drawn_for == tensor.numel() else where % tensor.numel()
            read.append((inside, tensor.detach().view(-1).index_select(0, inside)))
    return tuple(read)


def probe_problem(probed: Probe, copied: Result) -> str | None:
    """Whether an output changed between the probe's read and the copy after the timer."""
    for (where, values), tensor in zip(probed, checks.tensors(copied), strict=False):
        now = tensor.reshape(-1).index_select(0, where)
        same = values == now
        if values.is_floating_point():
            same |= values.isnan() & now.isnan()
        if not bool(same.all()):
            return "returned before its work was done: its output changed after the timed region ended"
    return None


def synchronize(device: str) -> None:
    """Wait for work queued on an accelerator, so that a timed region ends when the kernel has
    finished rather than when it was launched (calls on the CPU are synchronous already)."""
    if device != "cpu":
        torch.accelerator.synchronize()


def run_trials(
    run: Kernel, operator: Operator[Any], job: dict[str, Any], dtype: torch.dtype
) -> list[dict[str, Any]]:
    """One call per trial on fresh inputs; see the module docstring."""
    records: list[dict[str, Any]] = []
    outputs: list[Any] = []
    for trial in job["trials"]:
        shape = operator.parse_shape(trial["shape"])
        inputs = make_inputs(operator, shape, dtype, trial["seed"], job["device"])
        originals = [tensor.clone() for tensor in inputs]
        output = run(*inputs, **operator.attributes(shape))
        problem = checks.output_problem(output, job["device"], inputs, operator.outputs(shape))
        records.append(
            {
                "problem": problem,
                "output": None if problem else to_host(output),
                "mutated": [
                    index
                    for index, (now, was) in enumerate(zip(inputs, originals, strict=True))
                    if not torch.equal(now, was)
                ],
            }
        )
        outputs.append(None if problem else output)
    time.sleep(SETTLE_SECONDS)
    for record, output in zip(records, outputs, strict=True):
        settled = None if output is None else to_host(output)
        record["settled"] = None if settled is None or checks.same(settled, record["output"]) else settled
    return records


def time_kernel(
    run: Kernel, operator: Operator[Any], spec: dict[str, Any], timing: dict[str, Any], flush: torch.Tensor
) -> dict[str, Any]:
    """Median wall time of ``run`` on one shape, exactly as for every function timed."""
    shape = operator.parse_shape(spec["shape"])
    dtype = getattr(torch, timing["dtype"])
    attributes = operator.attributes(shape)
    device = timing["device"]
    for seed in spec["warmup_seeds"][:-1]:  # fresh inputs here too: a compiler meets varying sizes now
        run(*make_inputs(operator, shape, dtype, seed, device), **attributes)
    times_ns: list[int] = []
    fingerprints: list[float] = []
    problem = None
    generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    output = run(*make_inputs(operator, shape, dtype, spec["warmup_seeds"][-1], device), **attributes)
    for seed in spec["seeds"]:
        inputs = make_inputs(operator, shape, dtype, seed, device)
        positions = probe_positions(output, generator)  # the sizes of the last output
        flush.add_(1.0)
        synchronize(device)
        started = time.perf_counter_ns()
        output = run(*inputs, **attributes)
        synchronize(device)
        probed = probe(output, positions)
        synchronize(device)
        times_ns.append(time.perf_counter_ns() - started)
        problem = problem or checks.output_problem(output, device, inputs, operator.outputs(shape))
        copied = snapshot(output)
        problem = problem or probe_problem(probed, copied)
        fingerprints.append(checks.fingerprint(to_host(copied), seed))
    time.sleep(SETTLE_SECONDS)
    last, settled = to_host(copied), to_host(output)
    return {
        "times_ns": times_ns,
        "fingerprints": fingerprints,
        "problem": problem,
        "last": last,
        "settled": None if checks.same(settled, last) else settled,
    }


def flush_buffer(timing: dict[str, Any]) -> torch.Tensor:
    """Written before every timed run: larger than the last-level cache, it evicts the inputs."""
    return torch.zeros(max(1, timing["flush_bytes"] // 4), device=timing["device"])


def time_candidate(run: Kernel, operator: Operator[Any], timing: dict[str, Any]) -> dict[str, Any]:
    flush = flush_buffer(timing)
    timings = [time_kernel(run, operator, spec, timing, flush) for spec in timing["timings"]]
    return {"timings": timings, "threads": torch.get_num_threads()}


def time_baselines(
    operator: Operator[Any], compiled: Kernel | None, timing: dict[str, Any]
) -> dict[str, Any]:
    """The eager reference and, if asked, ``torch.compile`` of it, timed like a candidate."""
    flush = flush_buffer(timing)
    results = []
    for spec in timing["timings"]:
        entry: dict[str, Any] = {"eager": time_kernel(operator.reference, operator, spec, timing, flush)}
        if compiled is not None:
            try:
                entry["compiled"] = time_kernel(compiled, operator, spec, timing, flush)
            except Exception as error:  # a compiler failure is a fact about torch.compile, not a crash
                entry["compiled_error"] = f"{type(error).__name__}: {str(error)[:500]}"
        results.append(entry)
    return {"timings": results}


def error_kind(error: BaseException) -> str:
    text = str(error)
    allocation_failed = isinstance(error, RuntimeError) and (
        "can't allocate memory" in text or "not enough memory" in text
    )
    return "out_of_memory" if isinstance(error, MemoryError) or allocation_failed else "error"


def outcome(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """What ``work`` returned, or what it raised, as data the evaluator reads."""
    try:
        return work()
    except (Exception, SystemExit) as error:
        message = "".join(traceback.format_exception(error))[-3000:]
        return {"error": {"kind": error_kind(error), "message": message}}


def settle_allocator() -> None:
    """Keep freed memory in this process (glibc: no ``mmap`` for large blocks, no trimming), as a
    long-running trainer's heap settles to. Otherwise a call's new output may land on pages
    just returned to the system, and paging them back in (about a microsecond per 4 KiB) is
    timed as the call's work: 4-8 ms of a 20 MB output's, and which calls paid it depended on
    each process's history of allocations, so candidate and baselines paid unequally. A C
    library without ``mallopt`` is left as it is. Jobs and benchmarks do the same through
    :func:`rea.memory.keep_freed_memory`, which this process does not import: it runs only
    ``rea_kernel``'s code."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_MAX, 0)
        mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's malloc.h


def main() -> None:
    faulthandler.enable()
    sys.dont_write_bytecode = True
    settle_allocator()  # before anything large is allocated, and before a candidate's guard
    report_fd = int(os.environ[REPORT_FD_VARIABLE])
    directory = Path.cwd()
    job: dict[str, Any] = json.loads((directory / "job.json").read_text())
    operator = get_operator(job["operator"])

    def finish_phase(phase: str, result: dict[str, Any]) -> None:
        torch.save(result, f"{phase}.pt")
        os.write(report_fd, f"{phase}\n".encode())

    serve: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    if job["role"] == "baseline":
        # read by Inductor when torch.compile first imports it: set here, not in the environment
        # the process started with, which is what a fork server's children share
        os.environ |= {"TORCHINDUCTOR_CACHE_DIR": job["inductor_cache"], "TORCHINDUCTOR_COMPILE_THREADS": "1"}
        compiled = torch.compile(operator.reference) if job["compile_reference"] else None
        serve = partial(time_baselines, operator, compiled)
    else:
        forget_rea_modules()
        record = os.open(VIOLATIONS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        sys.addaudithook(Guard(directory, record, job.get("programs", ()), job.get("readable", ())))
        loaded: list[Kernel] = []

        def check() -> dict[str, Any]:
            loaded.append(load_candidate(directory / "candidate" / "kernel.py"))
            return {"trials": run_trials(loaded[0], operator, job, getattr(torch, job["dtype"]))}

        finish_phase(CORRECTNESS, outcome(check))
        serve = partial(time_candidate, loaded[0], operator) if loaded else None
    if serve is not None:
        for line in sys.stdin:
            finish_phase(TIMING, outcome(partial(serve, json.loads(line))))
    os._exit(0)  # without waiting for threads a candidate may have left running


if __name__ == "__main__":
    main()
