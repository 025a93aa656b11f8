"""Judge a candidate kernel: correct on fresh inputs of every shape, honest about its speed.

Published kernel searches have been fooled by kernels that read the reference's cached
output, mutate their inputs, escape the timer, or win on one shape only. So the evaluator
trusts nothing the candidate does and checks everything itself:

- The candidate only ever runs in a sandboxed child process (:mod:`rea_kernel.sandbox`), built
  there too. A hang, a crash or a runaway allocation becomes a verdict, never an exception here.
  The harness's children are forked from a fork server that has imported PyTorch already
  (:mod:`rea_kernel.forkserver`; :attr:`Settings.fork_server`), with the same limits,
  confinement and environment as a child started afresh, and memory that holds nothing but
  the server's imports.
- The reference output never exists where the candidate runs. The child gets seeds, makes the
  inputs, runs only the candidate and sends its outputs back; the evaluator regenerates the same
  inputs from the seeds, computes the reference here, after the child has exited, and compares.
  The eager reference and ``torch.compile`` of it are timed in a separate child that runs no
  candidate code, with the same harness, so the candidate can neither read a reference output
  nor slow the reference down.
- Every correctness trial draws a new seed, over all correctness shapes (odd, non-power-of-two,
  empty, large), at least two per shape: an output remembered from an earlier call is wrong on
  the next. Inputs are copied before the call and compared after it.
- Outputs must be plain, contiguous tensors on the target's device with the reference's dtype
  and shape (:func:`rea_kernel.checks.output_problem`).
- Timing: warm-up, then the median of many runs, each on fresh inputs (a memo keyed on the
  inputs' addresses or contents never hits), the caches flushed before each (a buffer larger
  than the last-level cache is written), and the timed region ends after reading one element
  of every page of every output, at places drawn anew for each run (the whole output is copied
  right after, and must not have changed: :func:`rea_kernel.harness.probe`). The runs are
  shared among rounds in which the candidate's process and the baselines' take turns, in the
  order candidate-baselines, baselines-candidate, ...: a machine that slows down part-way
  (shared hosts do) slows both sides alike instead of moving the ratio. Only the process being
  timed runs; the other is stopped (SIGSTOP), so a candidate cannot load the
  machine while the reference is timed, nor idle OpenMP threads spin beside the candidate.
  Every timed output is checked (by fingerprint, :mod:`rea_kernel.checks`) and the last one
  again, in full, after the loop: a kernel that returns before its work is done is caught by
  the difference.
- A speedup over eager beyond :attr:`Settings.suspicious_speedup` (default 20x: more than
  fusing these operators honestly gives on a CPU, except where eager pays per-call overhead on
  tiny shapes) is measured again, beside new shapes near it. One that does not reproduce was
  noise and the new measurement stands; one that does must hold, at half the bound, on the
  new shapes, or the candidate is rejected as tuned to (or memoised for) that one shape.

What the child reports about time is measured inside the candidate's process, so a candidate
that deliberately rewrites the harness's memory could forge it; the audit hook refuses the
usual routes (:mod:`rea_kernel.harness`) and the re-measurement on unseen shapes limits what
a forgery gains. Times are wall-clock times of ``run`` on the named device, never interpreter
time passed off as a kernel's.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

import rea_kernel
from rea.kernels import Candidate
from rea_kernel import checks
from rea_kernel.forkserver import start_forked
from rea_kernel.harness import CORRECTNESS, SETTLE_SECONDS, TIMING, VIOLATIONS
from rea_kernel.landlock import Confinement
from rea_kernel.operators import Operator, Result, Shape, dtype_name, get_operator
from rea_kernel.sandbox import Limits, SandboxedProcess, Verdict, last_line, start_exec
from rea_kernel.targets import Target, TargetUnavailableError, get_target

DEFAULT_FLUSH_BYTES = 64 << 20
TIMER = (
    "median wall-clock time of run() until one element of every page of its output has been read, "
    "fresh inputs and flushed caches before every run, in a sandboxed child process"
)


class Settings(BaseModel):
    """How hard to look at a candidate. The defaults are for a real evaluation; tests and a
    search's first screening pass fewer trials, shapes and repeats."""

    model_config = ConfigDict(frozen=True)

    trials: int = Field(default=3, ge=2, description="Trials per correctness shape, each with a new seed.")
    correctness_shapes: tuple[dict[str, Any], ...] | None = Field(
        default=None, min_length=1, description="A subset of shapes to check (plain data); None: all."
    )
    benchmark_shapes: tuple[dict[str, Any], ...] | None = Field(
        default=None, description="The shapes to time; None: the operator's; empty: check correctness only."
    )
    dtypes: tuple[str, ...] | None = Field(
        default=None, description="None: every dtype the operator supports."
    )
    warmup: int = Field(
        default=3,
        ge=1,
        description="Untimed runs per shape first, each on fresh inputs (two or more let "
        "torch.compile settle on dynamic sizes before the timed runs).",
    )
    repeats: int = Field(
        default=20, ge=1, description="Timed runs per shape in all rounds together; the median is reported."
    )
    rounds: int = Field(
        default=3,
        ge=1,
        description="Turns the candidate and the baselines take at timing (at most one per timed run); "
        "each round warms up again.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="Threads for the candidate (unless it sets its own) and the baselines; None: every core. "
        "One thread times steadily on a machine other work is using, where a parallel region waits for "
        "whichever of its threads was descheduled.",
    )
    huge_pages: bool = Field(
        default=False,
        description="Back the tensors of 2 MiB and more in both processes with transparent huge pages "
        "(PyTorch's THP_MEM_ALLOC_ENABLE; a no-op where the system's THP is 'never'), as a trainer with "
        "large embedding tables may run: a random row read then rarely misses the TLB.",
    )
    time_compiled_reference: bool = Field(
        default=True, description="Also time torch.compile of the reference (slow to compile)."
    )
    suspicious_speedup: float = Field(
        default=20.0, gt=0, description="A speedup over eager beyond this is re-measured on new shapes."
    )
    recheck_shapes: int = Field(default=2, ge=1, description="New shapes per suspicious one.")
    recheck_fraction: float = Field(
        default=0.5, gt=0, le=1, description="The share of the bound a speedup must keep on new shapes."
    )
    limits: Limits = Limits()
    fork_server: bool = Field(
        default=True,
        description="Fork the harness's processes from one that has already imported PyTorch "
        "(rea_kernel.forkserver) rather than start each afresh: the same limits, confinement and "
        "environment, without one to two seconds of imports per process.",
    )
    compile_limits: Limits = Limits(wall_seconds=120, memory_bytes=4 << 30, file_bytes=256 << 20)
    cache_dir: Path = Field(default=Path(".rea/kernel-cache"), description="Builds, by source hash.")
    cache_flush_bytes: int | None = Field(
        default=None, ge=4, description="Bytes written between timed runs; None: 1.5x the last-level cache."
    )
    seed: int | None = Field(
        default=None, description="Seeds the trials' seeds; None: fresh every evaluation."
    )

    def with_confinement(self, confine: bool) -> Settings:
        """These settings with Landlock confinement on or off for every child, the candidate's
        and its compiler's alike (off: for a machine where it keeps a GPU runtime from starting)."""
        return self.model_copy(
            update={
                "limits": self.limits.model_copy(update={"confine": confine}),
                "compile_limits": self.compile_limits.model_copy(update={"confine": confine}),
            }
        )


class ShapeCheck(BaseModel):
    """One correctness trial: enough to reproduce it (shape, dtype, seed) and what it showed."""

    shape: dict[str, Any]
    bucket: str
    dtype: str
    seed: int
    passed: bool
    max_abs_error: float | None = None
    allowance_used: float | None = Field(
        default=None, description="The largest error as a fraction of the one allowed (at most 1 passes)."
    )
    problem: str | None = None


class Timing(BaseModel):
    """Median seconds per call on one shape, of the candidate and of the baselines, on ``device``."""

    shape: dict[str, Any]
    bucket: str
    dtype: str
    device: str
    threads: int = Field(description="Threads torch ran with (and OpenMP's default) in both processes.")
    repeats: int
    rounds: int = Field(default=1, description="Turns the candidate and the baselines took at timing.")
    candidate_seconds: float
    eager_seconds: float
    compiled_seconds: float | None = None
    compiled_error: str | None = None
    purpose: Literal["benchmark", "superseded", "neighbour"] = Field(
        default="benchmark",
        description="A benchmark shape's measurement; one re-measured since (kept as evidence); or a new "
        "shape measured to confirm a suspicious speedup.",
    )

    @property
    def speedup_over_eager(self) -> float:
        return self.eager_seconds / self.candidate_seconds

    @property
    def speedup_over_compiled(self) -> float | None:
        return None if self.compiled_seconds is None else self.compiled_seconds / self.candidate_seconds


class Evaluation(BaseModel):
    """The verdict on one candidate, with a reason a person can read and the evidence."""

    candidate: str
    operator: str
    target: str
    device: str
    verdict: Verdict
    reason: str
    correctness: list[ShapeCheck] = Field(default_factory=list)
    timings: list[Timing] = Field(default_factory=list)
    timer: str = TIMER
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASSED

    @property
    def cost(self) -> float | None:
        """What a search minimises: the geometric mean of the candidate's median seconds over the
        benchmark shapes; None when the candidate failed or was not timed."""
        seconds = [timing.candidate_seconds for timing in self.timings if timing.purpose == "benchmark"]
        return statistics.geometric_mean(seconds) if self.passed and seconds else None


class EvaluationError(RuntimeError):
    """The evaluator itself could not do its job (a baseline failed): nothing about the candidate."""


class _Rejection(Exception):
    """How an evaluation ends early: the verdict and its reason."""

    def __init__(self, verdict: Verdict, reason: str) -> None:
        super().__init__(verdict, reason)
        self.verdict = verdict
        self.reason = reason


@dataclass
class _Run:
    """One evaluation in progress: its scratch directory, its seeds and its evidence."""

    candidate: Candidate
    operator: Operator[Any]
    target: Target
    settings: Settings
    scratch: Path
    rng: random.Random
    resources: ExitStack
    correctness: list[ShapeCheck] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    children: int = 0
    baseline: tuple[SandboxedProcess, Path] | None = None
    baseline_timed: bool = False

    def seed(self) -> int:
        return self.rng.getrandbits(62)

    def dtypes(self) -> list[torch.dtype]:
        supported = {dtype_name(dtype): dtype for dtype in self.operator.dtypes}
        asked = self.settings.dtypes or tuple(supported)
        unsupported = sorted(set(asked) - set(supported))
        if unsupported:
            raise ValueError(f"{self.operator.name} supports {sorted(supported)}, not {unsupported}")
        return [supported[name] for name in asked]

    def shapes(self, chosen: tuple[dict[str, Any], ...] | None, default: tuple[Shape, ...]) -> list[Shape]:
        return list(default) if chosen is None else [self.operator.parse_shape(shape) for shape in chosen]

    def benchmark_shapes(self) -> list[Shape]:
        """Where the candidate is timed: none on a target that cannot time kernels."""
        if not self.target.times_kernels():
            return []
        return self.shapes(self.settings.benchmark_shapes, self.operator.benchmark_shapes)

    def build(self) -> None:
        """Write the sources into the build directory and let the target build them there."""
        build = self.scratch / "build"
        build.mkdir()
        for name, text in self.candidate.sources.items():
            (build / name).write_text(text)
        cache = self.settings.cache_dir.resolve()
        failure = self.target.build(self.candidate, build, cache, self.settings.compile_limits)
        if failure is not None:
            raise _Rejection(failure.verdict, failure.reason)

    # the sandboxed children ----------------------------------------------------------------

    def start(self, role: str, job: dict[str, Any]) -> tuple[SandboxedProcess, Path]:
        """A child running the harness in a fresh directory (with a fresh copy of the built
        candidate, for a candidate role)."""
        self.children += 1
        directory = self.scratch / f"{self.children:02d}-{role}"
        directory.mkdir()
        environment = {"PYTHONPATH": str(Path(rea_kernel.__file__).resolve().parents[1])}
        if self.settings.threads is not None:
            environment |= dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS"), str(self.settings.threads))
        if self.settings.huge_pages:
            environment |= {"THP_MEM_ALLOC_ENABLE": "1"}
        access = self.target.run_time_access()
        if role == "baseline":
            inductor = self.settings.cache_dir.resolve() / "inductor"
            inductor.mkdir(parents=True, exist_ok=True)  # the sandbox grants only folders that exist
            job = job | {"inductor_cache": str(inductor)}
            access |= Confinement(read_write=(inductor,))
        else:
            shutil.copytree(self.scratch / "build", directory / "candidate")
        job = {
            "role": role,
            "operator": self.operator.name,
            "device": self.target.device,
            "programs": list(self.target.run_time_programs()),
            "readable": list(self.target.run_time_readable()),
            **job,
        }
        (directory / "job.json").write_text(json.dumps(job))
        command = [sys.executable, "-s", "-P", "-m", "rea_kernel.harness"]
        launcher = start_forked if self.settings.fork_server else start_exec
        return SandboxedProcess(command, directory, self.limits, environment, access, launcher), directory

    @property
    def limits(self) -> Limits:
        """The children's limits; on an accelerator, memory counts the heap and private writable
        mappings, not the address space its runtime reserves (see :class:`Limits`)."""
        if self.target.device == "cpu":
            return self.settings.limits
        return self.settings.limits.model_copy(update={"memory_counts": "data"})

    def outcome(self, process: SandboxedProcess, directory: Path, phase: str) -> dict[str, Any]:
        """The result of ``phase`` once the child reports it; whatever went wrong instead (a
        refused operation, a limit, a crash, an exception) becomes a :class:`_Rejection`."""
        reported = process.receive() == phase
        finished = None if reported else process.finish()
        records = directory / VIOLATIONS
        violations = (
            [json.loads(line)["reason"] for line in records.read_text().splitlines()]
            if records.exists()
            else []
        )
        if violations:
            more = f" (and {len(violations) - 1} more refused operations)" if len(violations) > 1 else ""
            raise _Rejection(Verdict.REJECTED, f"forbidden: the candidate {violations[0]}{more}")
        if finished is not None:
            failure = finished.failure(self.limits)
            if failure is not None:
                raise _Rejection(*failure)
            last = last_line(finished.stderr) or "no output"
            raise _Rejection(
                Verdict.CRASHED,
                f"exited with status {finished.returncode} before reporting its {phase}: {last}",
            )
        try:
            result = torch.load(directory / f"{phase}.pt", weights_only=True)
        except Exception as error:  # the file is the candidate's to spoil; that is its failure
            raise _Rejection(Verdict.CRASHED, f"left an unreadable {phase} result ({error})") from None
        if not isinstance(result, dict):
            raise _Rejection(Verdict.CRASHED, f"left a {phase} result that is not the harness's")
        raised = result.get("error")
        if isinstance(raised, dict):
            verdict = Verdict.OUT_OF_MEMORY if raised["kind"] == "out_of_memory" else Verdict.CRASHED
            raise _Rejection(verdict, f"raised {last_line(str(raised['message']))}")
        return result

    def timing_rounds(self, dtype: torch.dtype, shapes: list[Shape]) -> list[dict[str, Any]]:
        """One timing job per round, each with its own warm-up and its share of the repeats."""
        rounds = min(self.settings.rounds, self.settings.repeats)
        base, extra = divmod(self.settings.repeats, rounds)
        shares = [base + (index < extra) for index in range(rounds)]
        device_cache = self.target.cache_bytes()
        flush_bytes = self.settings.cache_flush_bytes or (
            int(device_cache * 1.5) if device_cache else _flush_bytes()
        )
        return [
            {
                "dtype": dtype_name(dtype),
                "timings": [
                    {
                        "shape": shape.model_dump(),
                        "warmup_seeds": [self.seed() for _ in range(self.settings.warmup)],
                        "seeds": [self.seed() for _ in range(share)],
                    }
                    for shape in shapes
                ],
                "flush_bytes": flush_bytes,
                "device": self.target.device,
            }
            for share in shares
        ]

    # the evaluation -----------------------------------------------------------------------

    def check_and_time(
        self, dtype: torch.dtype, trials: list[tuple[Shape, int]], shapes: list[Shape]
    ) -> list[Timing]:
        """One candidate process: the correctness ``trials``, judged here, then (if they pass)
        timing on ``shapes``, in rounds taking turns with the baselines' process."""
        job = {
            "dtype": dtype_name(dtype),
            "trials": [{"shape": shape.model_dump(), "seed": seed} for shape, seed in trials],
        }
        process, directory = self.start("candidate", job)
        with process:
            correctness = self.outcome(process, directory, CORRECTNESS)
            with _written_by_the_candidate(CORRECTNESS):
                self.judge_trials(trials, correctness["trials"], dtype)
            if not shapes:
                return []
            rounds = self.timing_rounds(dtype, shapes)
            candidate: list[dict[str, Any]] = []
            baselines: list[list[dict[str, Any]]] = []
            process.pause()
            self.baseline_child()[0].pause()
            for index, timing in enumerate(rounds):
                if index % 2 == 1:
                    baselines.append(self.baselines(timing))
                candidate.append(self.time_candidate(process, directory, shapes, dtype, timing))
                if index % 2 == 0:
                    baselines.append(self.baselines(timing))
        with _written_by_the_candidate(TIMING):
            threads = int(candidate[0]["threads"])
            candidate_seconds = [
                _median_seconds([timed["timings"][position] for timed in candidate])
                for position in range(len(shapes))
            ]
        measured = [
            self.timing(shape, dtype, threads, len(rounds), seconds, [entry[position] for entry in baselines])
            for position, (shape, seconds) in enumerate(zip(shapes, candidate_seconds, strict=True))
        ]
        self.timings.extend(measured)
        return measured

    def timing(
        self,
        shape: Shape,
        dtype: torch.dtype,
        threads: int,
        rounds: int,
        candidate_seconds: float,
        references: list[dict[str, Any]],
    ) -> Timing:
        """One shape's measurement: the candidate's median and the baselines' over every round."""
        errors = [entry["compiled_error"] for entry in references if "compiled_error" in entry]
        compiled_error = errors[0] if errors else None
        compiled = [entry["compiled"] for entry in references if "compiled" in entry]
        return Timing(
            shape=shape.model_dump(),
            bucket=self.operator.bucket(shape),
            dtype=dtype_name(dtype),
            device=self.target.device_name(),
            threads=threads,
            repeats=self.settings.repeats,
            rounds=rounds,
            candidate_seconds=candidate_seconds,
            eager_seconds=_median_seconds([entry["eager"] for entry in references]),
            compiled_seconds=_median_seconds(compiled) if compiled and compiled_error is None else None,
            compiled_error=compiled_error,
        )

    def time_candidate(
        self,
        process: SandboxedProcess,
        directory: Path,
        shapes: list[Shape],
        dtype: torch.dtype,
        timing: dict[str, Any],
    ) -> dict[str, Any]:
        """One round of the candidate's timing, every output judged; its process stopped after."""
        process.resume()
        process.send(json.dumps(timing))
        timed = self.outcome(process, directory, TIMING)
        process.pause()
        with _written_by_the_candidate(TIMING):
            for shape, spec, result in zip(shapes, timing["timings"], timed["timings"], strict=True):
                self.judge_timed_outputs(shape, dtype, spec["seeds"], result)
        return timed

    def baseline_child(self) -> tuple[SandboxedProcess, Path]:
        """The baselines' trusted process, kept for the whole evaluation. It is started before the
        candidate is built, so that its start (Python and PyTorch: seconds) overlaps the build and
        the candidate's own start and trials instead of following them; stopped before the
        candidate is first timed; held to its wall-clock limit from its first timing job; and
        killed once the evaluation ends (it has nothing left to say, and a rejected candidate's is
        not waited for)."""
        if self.baseline is None:
            job = {"compile_reference": self.settings.time_compiled_reference}
            process, directory = self.start("baseline", job)
            self.resources.callback(process.abandon)
            self.baseline = process, directory
        return self.baseline

    def baselines(self, timing: dict[str, Any]) -> list[dict[str, Any]]:
        """The eager and compiled reference, timed on the candidate's seeds by the same harness,
        in the baselines' process (stopped while a candidate runs)."""
        process, directory = self.baseline_child()
        process.resume()
        if not self.baseline_timed:
            process.count_from_now()
            self.baseline_timed = True
        process.send(json.dumps(timing))
        try:
            timings: list[dict[str, Any]] = self.outcome(process, directory, TIMING)["timings"]
        except _Rejection as failure:
            raise EvaluationError(
                f"timing the reference of {self.operator.name} failed: {failure.reason}"
            ) from None
        process.pause()
        return timings

    def judge_trials(
        self, trials: list[tuple[Shape, int]], records: list[dict[str, Any]], dtype: torch.dtype
    ) -> None:
        failures: list[tuple[ShapeCheck, str]] = []
        rule = ""
        correct_earlier: list[tuple[Shape, Result]] = []
        for (shape, seed), record in zip(trials, records, strict=True):
            check = ShapeCheck(
                shape=shape.model_dump(),
                bucket=self.operator.bucket(shape),
                dtype=dtype_name(dtype),
                seed=seed,
                passed=False,
            )
            self.correctness.append(check)
            if record["problem"]:
                check.problem = record["problem"]
                raise _Rejection(Verdict.REJECTED, f"{record['problem']} (shape {check.shape})")
            if record["mutated"]:
                check.problem = f"modified input {record['mutated'][0]}"
                raise _Rejection(
                    Verdict.REJECTED,
                    f"modified its input (input {record['mutated'][0]} of the call, shape {check.shape}): "
                    "kernels must leave their inputs as they found them",
                )
            expected = self.expected(shape, dtype, seed)
            rule = expected.rule
            output: Result = record["output"]
            comparison = checks.compare(output, expected)
            check.max_abs_error, check.allowance_used = comparison.max_abs_error, comparison.used
            check.passed = comparison.matches
            settled = record["settled"]
            if not comparison.matches:
                if settled is not None and checks.compare(settled, expected).matches:
                    raise _Rejection(
                        Verdict.REJECTED,
                        "returned before its work was done: the output was wrong when run() returned and "
                        f"right {SETTLE_SECONDS} s later (shape {check.shape})",
                    )
                if any(earlier == shape and checks.same(output, right) for earlier, right in correct_earlier):
                    raise _Rejection(
                        Verdict.REJECTED,
                        "returned a cached output: for new inputs it returned exactly the right output of an "
                        f"earlier call on other inputs (shape {check.shape})",
                    )
                check.problem = comparison.reason
                failures.append((check, comparison.reason or "wrong values"))
            else:
                correct_earlier.append((shape, output))
        if failures:
            wrong = {failure.bucket for failure, _ in failures}
            right = {check.bucket for check in self.correctness if check.passed} - wrong
            example, why = failures[0]
            only = f"; correct only on {sorted(right)}" if right else ""
            raise _Rejection(
                Verdict.REJECTED,
                f"incorrect on {len(wrong)} of {len(wrong | right)} shapes (first: {example.shape}, {why}, "
                f"tolerance {rule}){only}",
            )

    def expected(self, shape: Shape, dtype: torch.dtype, seed: int) -> checks.Expected:
        inputs = self.operator.make_inputs(shape, dtype, torch.Generator().manual_seed(seed))
        return checks.expected_of(self.operator, inputs, self.operator.attributes(shape), dtype)

    def judge_timed_outputs(
        self, shape: Shape, dtype: torch.dtype, seeds: list[int], timed: dict[str, Any]
    ) -> None:
        """Every timed output against the reference of its own inputs."""
        where = f"(shape {shape.model_dump()}, while timing)"
        if timed["problem"]:
            raise _Rejection(Verdict.REJECTED, f"{timed['problem']} {where}")
        last = self.expected(shape, dtype, seeds[-1])
        settled = timed["last"] if timed["settled"] is None else timed["settled"]
        if not checks.compare(timed["last"], last).matches:
            if checks.compare(settled, last).matches:
                raise _Rejection(
                    Verdict.REJECTED,
                    "returned before its work was done: the output copied as the timed region ended "
                    f"was wrong, and right after the timing loop {where}",
                )
            raise _Rejection(Verdict.REJECTED, f"incorrect {where}")
        for run, (seed, value) in enumerate(zip(seeds, timed["fingerprints"], strict=True)):
            expected = last if run == len(seeds) - 1 else self.expected(shape, dtype, seed)
            if not checks.fingerprint_matches(value, expected, seed):
                cached = run > 0 and value == timed["fingerprints"][run - 1]
                kind = (
                    "returned a cached output (the same as for the previous inputs)"
                    if cached
                    else "incorrect"
                )
                raise _Rejection(Verdict.REJECTED, f"{kind} on timed run {run + 1} {where}")

    def judge(self) -> None:
        """Every dtype: correctness on fresh seeds, timing, and a second look at a suspicious speedup."""
        correctness = self.shapes(self.settings.correctness_shapes, self.operator.correctness_shapes)
        benchmark = self.benchmark_shapes()
        for dtype in self.dtypes():
            trials = [(shape, self.seed()) for shape in correctness for _ in range(self.settings.trials)]
            self.confirm_speedups(dtype, self.check_and_time(dtype, trials, benchmark))

    def confirm_speedups(self, dtype: torch.dtype, measured: list[Timing]) -> None:
        """A speedup beyond the bound is measured again, with new shapes near it. If it does not
        reproduce on its own shape, the first measurement was noise and the new one stands; if
        it does, it must hold on the new shapes too."""
        bound = self.settings.suspicious_speedup
        suspicious = [timing for timing in measured if timing.speedup_over_eager > bound]
        if not suspicious:
            return
        shapes = [self.operator.parse_shape(timing.shape) for timing in suspicious]
        neighbours = [
            self.operator.nearby_shape(shape, self.rng)
            for shape in shapes
            for _ in range(self.settings.recheck_shapes)
        ]
        rechecked = self.check_and_time(dtype, [], shapes + neighbours)
        again, around = rechecked[: len(shapes)], rechecked[len(shapes) :]
        for timing in suspicious:
            timing.purpose = "superseded"
        for timing in around:
            timing.purpose = "neighbour"
        reproduced = [timing for timing in again if timing.speedup_over_eager > bound]
        floor = bound * self.settings.recheck_fraction
        weakest = min(around, key=lambda timing: timing.speedup_over_eager)
        if reproduced and weakest.speedup_over_eager < floor:
            best = max(reproduced, key=lambda timing: timing.speedup_over_eager)
            raise _Rejection(
                Verdict.REJECTED,
                f"a {best.speedup_over_eager:.1f}x speedup over eager on {best.shape} (twice beyond the "
                f"{bound:g}x believed unchecked) did not hold on new shapes: "
                f"{weakest.speedup_over_eager:.2f}x on {weakest.shape}, under {floor:g}x; tuned to, or "
                "memoised for, that shape",
            )

    def summary(self) -> str:
        shapes = {check.bucket for check in self.correctness}
        correct = f"correct on {len(self.correctness)} trials over {len(shapes)} shapes"
        used = [check.allowance_used for check in self.correctness if check.allowance_used is not None]
        if used:
            correct += f" (worst error {max(used):.2g} of the allowed)"
        speedups = [
            f"{timing.bucket} {timing.speedup_over_eager:.2f}x"
            + (
                ""
                if timing.speedup_over_compiled is None
                else f" ({timing.speedup_over_compiled:.2f}x over compiled)"
            )
            for timing in self.timings
            if timing.purpose == "benchmark"
        ]
        if speedups:
            return f"{correct}; speedup over eager: {', '.join(speedups)}"
        return f"{correct}; not timed" + (
            "" if self.target.times_kernels() else f" ({self.target.device_name()})"
        )


def evaluate(
    candidate: Candidate, operator: Operator[Any] | str, settings: Settings | None = None
) -> Evaluation:
    """Judge ``candidate`` as a kernel for ``operator``: always returns an :class:`Evaluation`,
    whatever the candidate does. Raises :class:`TargetUnavailableError` if this machine cannot
    run the candidate's target, and :class:`EvaluationError` if timing the reference fails."""
    settings = settings or Settings()
    operator = get_operator(operator) if isinstance(operator, str) else operator
    target = get_target(candidate.target)
    unavailable = target.unavailable()
    if unavailable is not None:
        raise TargetUnavailableError(unavailable)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rea-kernel-") as scratch, ExitStack() as resources:
        run = _Run(
            candidate, operator, target, settings, Path(scratch), random.Random(settings.seed), resources
        )
        try:
            if candidate.operator != operator.name:
                raise _Rejection(
                    Verdict.REJECTED, f"a kernel for {candidate.operator}, not for {operator.name}"
                )
            if run.benchmark_shapes():
                run.baseline_child()  # it starts while the candidate is built and checked
            run.build()
            run.judge()
            verdict, reason = Verdict.PASSED, run.summary()
        except _Rejection as rejection:
            verdict, reason = rejection.verdict, rejection.reason
    return Evaluation(
        candidate=candidate.digest,
        operator=operator.name,
        target=target.name,
        device=target.device_name(),
        verdict=verdict,
        reason=reason,
        correctness=run.correctness,
        timings=run.timings,
        seconds=time.monotonic() - started,
    )


@contextmanager
def _written_by_the_candidate(phase: str) -> Iterator[None]:
    """Reading a result a candidate's process wrote: one that is not what the harness writes
    (the candidate overwrote it) is the candidate's failure, not the evaluator's."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
        reason = f"left a {phase} result the harness did not write ({type(error).__name__}: {error})"
        raise _Rejection(Verdict.CRASHED, reason) from None


def _median_seconds(rounds: list[dict[str, Any]]) -> float:
    """The median over every round's runs of one function on one shape."""
    return statistics.median(time for timed in rounds for time in timed["times_ns"]) / 1e9


def _flush_bytes() -> int:
    """1.5x the largest CPU cache this machine reports, so one write evicts everything timed."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip()
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return int(max(sizes) * 1.5) if sizes else DEFAULT_FLUSH_BYTES


__all__ = [
    "Evaluation",
    "EvaluationError",
    "Settings",
    "ShapeCheck",
    "TargetUnavailableError",
    "Timing",
    "evaluate",
]
