"""What a baseline run's :class:`~rea.workloads.Diagnostics` point to, and how that re-ranks
hypotheses: the reading a ranking engineer does before choosing what to try.

Each finding names one of the catalogue's signals (over-fitting, under-fitting, slow
convergence, instability, interactions) with the measured evidence, so a hypothesis that
addresses it says why it ranks where it does. Thresholds are rules of thumb, kept here in one
place; pure functions, used by the hypothesis service (a past run of the same baseline) and by
the planner (this campaign's own baseline, before later validation rounds).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from rea.events import Hypothesis
from rea.workloads import Diagnostics

OVERFIT_GAP = 0.04
"""Validation NE this much (relative) above training NE: the model memorises its training rows."""
UNDERFIT_TRAIN_NE = 0.9
"""Training NE above this: the model explains under 10% of the label entropy even on rows it saw."""
UNDERFIT_GAP = 0.01
STILL_FALLING = 0.005
"""Validation NE still falling this much (relative) in the last epoch: training stopped early."""
SPIKE_RATIO = 10.0
"""A gradient norm this many times the median marks an unstable step."""
MATTERS = 0.1
"""A feature whose shuffling costs at least this share of the top feature's NE increase matters."""
MATTERING_FEATURES = 3
NOTICEABLE = 0.002
"""...and the top feature's own increase must be at least this (NE), or the model learnt too
little for its importances to mean anything."""
BOOST = 0.5
"""Expected gain grows by this fraction per finding a hypothesis addresses..."""
CONTRADICTED = 0.5
"""...and is multiplied by this when it only addresses the opposite of what was found."""
OPPOSITES = {"overfitting": "underfitting", "underfitting": "overfitting"}


@dataclass(frozen=True)
class Finding:
    signal: str
    evidence: str

    def __str__(self) -> str:
        """How a finding is kept and shown: "signal: evidence"."""
        return f"{self.signal}: {self.evidence}"


def findings(d: Diagnostics) -> list[Finding]:
    """The signals a baseline run shows, each with its evidence."""
    found: list[Finding] = []
    gap = (d.validation_ne - d.train_ne) / d.validation_ne if d.validation_ne > 0 else 0.0
    if gap > OVERFIT_GAP:
        found.append(Finding("overfitting", f"validation NE {gap:.1%} above training NE"))
    elif d.train_ne > UNDERFIT_TRAIN_NE or gap < UNDERFIT_GAP:
        found.append(
            Finding("underfitting", f"training NE {d.train_ne:.3f}, validation NE only {gap:.1%} above it")
        )
    curve, best = d.val_ne_by_epoch, min(d.val_ne_by_epoch, default=0.0)
    if len(curve) >= 2 and curve[-2] > 0:
        last = (curve[-2] - curve[-1]) / curve[-2]
        if last > STILL_FALLING:
            found.append(Finding("slow_convergence", f"validation NE fell {last:.1%} in the last epoch"))
        elif curve[-1] > best * (1 + STILL_FALLING):
            found.append(Finding("overfitting", f"validation NE rose from {best:.4f} to {curve[-1]:.4f}"))
    losses = d.train_loss_by_epoch
    rises = [b / a - 1 for a, b in pairwise(losses) if a > 0 and b > a * 1.01]
    if d.grad_norm_median > 0 and d.grad_norm_max > SPIKE_RATIO * d.grad_norm_median:
        ratio = d.grad_norm_max / d.grad_norm_median
        found.append(Finding("instability", f"gradient-norm spike {ratio:.0f}x the median"))
    elif rises:
        found.append(Finding("instability", f"training loss rose {max(rises):.1%} between epochs"))
    ranked = sorted(d.feature_importance.items(), key=lambda item: -item[1])
    if ranked and ranked[0][1] >= NOTICEABLE:
        mattering = [name for name, value in ranked if value >= MATTERS * ranked[0][1]]
        if len(mattering) >= MATTERING_FEATURES:
            top = ", ".join(f"{name} (+{value:.4f} NE)" for name, value in ranked[:3])
            found.append(
                Finding(
                    "interactions",
                    f"{len(mattering)} features carry signal by permutation importance, led by {top}",
                )
            )
    return _merged(found)


def _merged(found: list[Finding]) -> list[Finding]:
    """One finding per signal (evidence joined), in first-seen order."""
    by_signal: dict[str, list[str]] = {}
    for finding in found:
        by_signal.setdefault(finding.signal, []).append(finding.evidence)
    return [Finding(signal, "; ".join(evidence)) for signal, evidence in by_signal.items()]


def rerank(hypotheses: list[Hypothesis], found: list[Finding]) -> list[Hypothesis]:
    """Hypotheses re-weighted by what the baseline showed, best expected gain first: one that
    addresses a finding gains, one that only addresses its opposite loses; the evidence goes
    into the rationale and a catalogue hypothesis it moved is marked as from diagnostics."""
    if not found:
        return hypotheses
    evidence = {f.signal: f.evidence for f in found}
    moved: list[Hypothesis] = []
    for hypothesis in hypotheses:
        signals = set(hypothesis.signals)
        addressed = [s for s in hypothesis.signals if s in evidence]
        opposed = signals and all(OPPOSITES.get(s) in evidence for s in signals)
        if not addressed and not opposed:
            moved.append(hypothesis)
            continue
        factor = (1 + BOOST * len(addressed)) * (CONTRADICTED if opposed else 1.0)
        said = "; ".join(f"{s}: {evidence[s]}" for s in addressed) or "; ".join(
            f"{OPPOSITES[s]} found: {evidence[OPPOSITES[s]]}" for s in signals
        )
        moved.append(
            hypothesis.model_copy(
                update={
                    "expected_gain": hypothesis.expected_gain * factor,
                    "source": "diagnostics" if hypothesis.source == "catalogue" else hypothesis.source,
                    "rationale": f"{hypothesis.rationale} Baseline diagnostics: {said}.",
                }
            )
        )
    return sorted(moved, key=lambda h: -h.expected_gain)
