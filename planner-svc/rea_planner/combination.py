"""The combination phase: stack the hypotheses that beat the baseline, and check how pairs interact.

Winners are the validated hypotheses whose validation NE beat the baseline's, best first.
The phase runs, within the budget it is given:

- every compatible *pair* of the best ``PAIR_POOL`` winners, so each pair's joint effect can be
  compared with the sum of its parts (``interactions``): additive, synergistic or conflicting;
- the greedy *stacks* of three and more: the best winners added one by one, in order, skipping
  one whose changes contradict what the stack already sets.

Then *extension* rounds (greedy forward selection): a hypothesis' effect depends on the config
it is applied to — an interaction term that only hurts an under-trained baseline can be the
largest gain once a combination trains well. So the hypotheses no combination has tried yet,
best prior first, are each tried on top of the best config so far, ``max_parallel_jobs`` per
round; rounds go on while the last one found a new best. A hypothesis that improved the
config it extended but lost its round to a bigger gain is tried once more, first, on the new
best; otherwise each hypothesis enters the phase once, which bounds it.

Then *pruning* rounds (backward elimination): the parts of the best config were each added to
a smaller config, and what helped there can hurt the larger one (layer norm helped a stack of
a 3x learning rate and small batches, then cost 3-4% NE once DCN-v2 and FM joined it). So each
hypothesis the best config carries is taken out once, ``max_parallel_jobs`` per round, the
weakest evidence first: those stacked for their effect on the baseline before those an
extension round added (measured on top of nearly the config they are in), and among each the
smallest gain on the baseline first. A config already measured is never run again. A pruned
config that is the new best is extended and pruned in turn; every config runs at most once,
which bounds it.

Pure functions: the planner calls them when a validation or combination round concludes and
again, for the interactions, when the campaign is summarised.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from statistics import stdev

from rea.events import Hypothesis, Interaction, JobRecord, JobSpec, PhasePlan
from rea.phases import COMBINATION, CONFIRMATION, VALIDATION, kind, numbered, round_number
from rea.workloads import get_workload
from rea_planner.campaign import Campaign
from rea_planner.costs import CostModel
from rea_planner.jobs import JOIN, WITHOUT, anchor, is_pruned, make_job, parts, plan_of

PAIR_POOL = 3
MAX_STACK = 4
# Without repeated baseline runs to measure seed noise, differences below this fraction of the
# baseline's NE are called additive.
FALLBACK_RELATIVE_TOLERANCE = 0.001


def combined_id(hypotheses: list[Hypothesis]) -> str:
    return JOIN.join(h.id for h in hypotheses)


def merged(hypotheses: list[Hypothesis]) -> dict[str, object] | None:
    """The union of their changes, or None if two of them set one knob to different values."""
    changes: dict[str, object] = {}
    for hypothesis in hypotheses:
        for knob, value in hypothesis.changes.items():
            if knob in changes and changes[knob] != value:
                return None
            changes[knob] = value
    return changes


def validated_effects(records: list[JobRecord]) -> tuple[float, dict[str, float]] | None:
    """The baseline's validation NE and each validated hypothesis' delta from it."""
    done = [j for j in records if j.status == "completed" and j.validation and kind(j.phase) == VALIDATION]
    baseline = next((j for j in done if j.hypothesis_id is None), None)
    if baseline is None or baseline.validation is None:
        return None
    base = baseline.validation.ne
    return base, {j.hypothesis_id: j.validation.ne - base for j in done if j.hypothesis_id and j.validation}


def baseline_effects(records: list[JobRecord]) -> dict[str, float]:
    """Each validated hypothesis' validation NE delta from the baseline; empty until the
    baseline is validated."""
    found = validated_effects(records)
    return found[1] if found else {}


def winners(campaign: Campaign, records: list[JobRecord]) -> list[Hypothesis]:
    """Validated hypotheses that beat the baseline on validation NE, best first."""
    effects = baseline_effects(records)
    beat = [h for h in campaign.hypotheses if effects.get(h.id, 0.0) < 0]
    return sorted(beat, key=lambda h: effects[h.id])


def candidates(best_first: list[Hypothesis]) -> list[list[Hypothesis]]:
    """Pairs of the best ``PAIR_POOL`` winners (best pair first), then greedy stacks of 3+."""
    found = [list(pair) for pair in combinations(best_first[:PAIR_POOL], 2) if merged(list(pair)) is not None]
    stack: list[Hypothesis] = []
    for hypothesis in best_first:
        if len(stack) == MAX_STACK:
            break
        if merged([*stack, hypothesis]) is not None:
            stack.append(hypothesis)
            if len(stack) >= 3:
                found.append(list(stack))
    return found


def plan_combination(
    campaign: Campaign,
    records: list[JobRecord],
    costs: CostModel,
    room: float,
) -> PhasePlan | None:
    """The combination phase's jobs that fit in ``room`` CPU seconds; None with fewer than two
    winners or when nothing fits."""
    assert campaign.spec is not None
    schema = get_workload(campaign.spec.workload).schema
    baseline = schema.resolve(campaign.spec.baseline)
    jobs: list[JobSpec] = []
    for stack in candidates(winners(campaign, records)):
        changes = merged(stack)
        assert changes is not None
        config = schema.resolve(changes, base=baseline)
        job = make_job(campaign.spec, campaign.campaign_id, combined_id(stack), config, costs, COMBINATION)
        if job.estimated_cpu_seconds <= room:
            room -= job.estimated_cpu_seconds
            jobs.append(job)
    return plan_of(COMBINATION, jobs) if jobs else None


def plan_extension(
    campaign: Campaign, records: list[JobRecord], costs: CostModel, room: float
) -> PhasePlan | None:
    """The next extension round: untried hypotheses on top of the best config so far, that fit in
    ``room`` CPU seconds. None when the best is the baseline, when the last combination round
    found no new best, or when no candidate is left or fits."""
    assert campaign.spec is not None
    spec = campaign.spec
    best = anchor(records)
    if best is None or best.hypothesis_id is None:
        return None
    rounds = {j.phase for j in records if kind(j.phase) == COMBINATION}
    if rounds and best.phase != max(rounds, key=round_number):
        return None
    by_id = {h.id: h for h in campaign.hypotheses}
    if not all(name in by_id for name in parts(best.hypothesis_id)):
        return None
    base = [by_id[name] for name in parts(best.hypothesis_id)]
    again = [by_id[name] for name in runners_up(records, best) if name in by_id]
    tried = {name for j in records if kind(j.phase) == COMBINATION for name in parts(j.hypothesis_id)}
    tried |= {h.id for h in base}
    untried = [h for h in campaign.hypotheses if h.id not in tried]
    schema = get_workload(spec.workload).schema
    baseline = schema.resolve(spec.baseline)
    phase = numbered(COMBINATION, len(rounds) + 1)
    jobs: list[JobSpec] = []
    for hypothesis in [*again, *sorted(untried, key=lambda h: -h.expected_gain)]:
        if len(jobs) == spec.max_parallel_jobs:
            break
        changes = merged([*base, hypothesis])
        if changes is None or schema.errors(hypothesis.changes):
            continue
        config = schema.resolve(changes, base=baseline)
        if config == best.config:
            continue  # changes nothing the best config does not already have
        job = make_job(spec, campaign.campaign_id, combined_id([*base, hypothesis]), config, costs, phase)
        if job.estimated_cpu_seconds <= room:
            room -= job.estimated_cpu_seconds
            jobs.append(job)
    return plan_of(phase, jobs) if jobs else None


def plan_pruning(
    campaign: Campaign, records: list[JobRecord], costs: CostModel, room: float
) -> PhasePlan | None:
    """The next pruning round: the best config so far with one of its hypotheses taken out, the
    weakest evidence first (see the module's docstring), for the configs not measured yet that
    fit in ``room`` CPU seconds. None when the best is the baseline or a single hypothesis, or
    when no candidate is left or fits."""
    assert campaign.spec is not None
    spec = campaign.spec
    best = anchor(records)
    if best is None or best.hypothesis_id is None:
        return None
    names = parts(best.hypothesis_id)
    by_id = {h.id: h for h in campaign.hypotheses}
    if len(names) < 2 or not all(name in by_id for name in names):
        return None
    schema = get_workload(spec.workload).schema
    baseline = schema.resolve(spec.baseline)
    measured = [j.config for j in records]
    rounds = {j.phase for j in records if kind(j.phase) == COMBINATION}
    phase = numbered(COMBINATION, len(rounds) + 1)
    alone = baseline_effects(records)
    extended = {parts(j.hypothesis_id)[-1] for j in records if _is_extension(j.phase, j.hypothesis_id)}
    jobs: list[JobSpec] = []
    for name in sorted(names, key=lambda name: (name in extended, -alone.get(name, 0.0))):
        if len(jobs) == spec.max_parallel_jobs:
            break
        changes = merged([by_id[other] for other in names if other != name])
        assert changes is not None  # a subset of a consistent stack is consistent
        config = schema.resolve(changes, base=baseline)
        if config in measured:
            continue
        job_name = f"{JOIN.join(names)}{WITHOUT}{name}"
        job = make_job(spec, campaign.campaign_id, job_name, config, costs, phase)
        if job.estimated_cpu_seconds <= room:
            room -= job.estimated_cpu_seconds
            jobs.append(job)
    return plan_of(phase, jobs) if jobs else None


def runners_up(records: list[JobRecord], best: JobRecord) -> list[str]:
    """Hypotheses that improved the config they extended in ``best``'s extension round but lost
    the round to ``best``, best first: evidence says they help, so they are tried on the new best
    before any untried one (once: a second extension of a hypothesis is never repeated)."""
    if not _is_extension(best.phase, best.hypothesis_id):
        return []
    added = Counter(parts(j.hypothesis_id)[-1] for j in records if _is_extension(j.phase, j.hypothesis_id))
    measured = _validation_nes(records)
    found: list[tuple[float, str]] = []
    for job in records:
        if job.phase != best.phase or job.job_id == best.job_id:
            continue
        if job.status != "completed" or job.validation is None:
            continue
        *onto, name = parts(job.hypothesis_id)
        if added[name] == 1 and job.validation.ne < measured.get(JOIN.join(onto), float("-inf")):
            found.append((job.validation.ne, name))
    return [name for _, name in sorted(found)]


def _is_extension(phase: str, hypothesis_id: str | None) -> bool:
    """Extension jobs run in the numbered combination rounds ("combination-2", ...; "combination-1"
    when no stacking round ran), beside pruning rounds; the stacking round is "combination"."""
    return kind(phase) == COMBINATION and phase != COMBINATION and not is_pruned(hypothesis_id)


def _validation_nes(records: list[JobRecord]) -> dict[str, float]:
    """Validation NE by the hypotheses a config carries ("a+b", however it was reached), for the
    configs validation and combination measured."""
    return {
        JOIN.join(parts(j.hypothesis_id)): j.validation.ne
        for j in records
        if j.hypothesis_id
        and j.status == "completed"
        and j.validation
        and kind(j.phase) in (VALIDATION, COMBINATION)
    }


@dataclass(frozen=True)
class Extension:
    """What one hypothesis did on top of a config it extended, beside what it did alone."""

    hypothesis: str
    onto: str  # the combined id of the config it was added to
    effect: float  # validation NE delta from that config
    alone: float | None  # its validation NE delta from the baseline; None if not validated


def extension_effects(records: list[JobRecord]) -> list[Extension]:
    """Every completed extension job's effect on the config it extended, in the order they ran:
    a job's last part is the hypothesis added, the rest the config it was added to."""
    alone = baseline_effects(records)
    measured = _validation_nes(records)
    result: list[Extension] = []
    for job in records:
        if not _is_extension(job.phase, job.hypothesis_id):
            continue
        if job.status != "completed" or job.validation is None:
            continue
        *base, added = parts(job.hypothesis_id)
        onto = JOIN.join(base)
        if onto in measured:
            result.append(Extension(added, onto, job.validation.ne - measured[onto], alone.get(added)))
    return result


@dataclass(frozen=True)
class Removal:
    """What taking one hypothesis out of a config did, beside what adding it to the baseline did."""

    hypothesis: str
    of: str  # the combined id of the config it was taken out of
    effect: float  # validation NE delta from that config (negative: better without it)
    alone: float | None  # its validation NE delta from the baseline; None if not validated


def pruning_effects(records: list[JobRecord]) -> list[Removal]:
    """Every completed pruning job's effect, in the order they ran."""
    alone = baseline_effects(records)
    measured = _validation_nes(records)
    result: list[Removal] = []
    for job in records:
        if not is_pruned(job.hypothesis_id) or kind(job.phase) != COMBINATION:
            continue
        if job.status != "completed" or job.validation is None or job.hypothesis_id is None:
            continue
        of, _, removed = job.hypothesis_id.partition(WITHOUT)
        if of in measured:
            result.append(Removal(removed, of, job.validation.ne - measured[of], alone.get(removed)))
    return result


def interactions(records: list[JobRecord]) -> list[Interaction]:
    """Each combined pair's observed effect against the sum of its parts.

    The tolerance comes from the data: the baseline's validation NE over its seeds (the
    confirmation phase reruns it) gives the seed noise sigma of one run; the interaction
    ``NE(ab) - NE(a) - NE(b) + NE(base)`` adds four runs, so 2 x (2 sigma) bounds ~95% of noise.
    """
    found = validated_effects(records)
    if found is None:
        return []
    base, effects = found
    baseline_runs = [
        j.validation.ne
        for j in records
        if j.hypothesis_id is None
        and j.status == "completed"
        and j.validation
        and kind(j.phase) in (VALIDATION, CONFIRMATION)
    ]
    tolerance = 4 * stdev(baseline_runs) if len(baseline_runs) >= 2 else FALLBACK_RELATIVE_TOLERANCE * base
    result: list[Interaction] = []
    for job in records:
        names = parts(job.hypothesis_id)
        if kind(job.phase) != COMBINATION or len(names) != 2 or job.validation is None:
            continue
        if job.status != "completed" or not all(name in effects for name in names):
            continue
        a, b = effects[names[0]], effects[names[1]]
        observed = job.validation.ne - base
        gap = observed - (a + b)
        label = "additive" if abs(gap) <= tolerance else ("synergistic" if gap < 0 else "conflicting")
        result.append(
            Interaction(
                pair=(names[0], names[1]),
                effects=(a, b),
                expected=a + b,
                observed=observed,
                tolerance=tolerance,
                kind=label,
            )
        )
    return result
