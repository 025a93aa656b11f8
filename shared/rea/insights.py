"""Historical insights: what each hypothesis did before, per workload family.

The logger keeps, for every completed campaign, each validated hypothesis' effect (relative
validation-NE gain over that campaign's baseline, one seed) and the campaign's winning
changes. The hypothesis service reads them back: hypotheses that worked before rank higher,
ones that hurt rank lower (or are left out), and the best configuration found before on the
family is offered first. Effects are combined with the catalogue's prior by shrinkage, so a
single lucky campaign does not overrule the literature.

A *family* is a workload on one kind of data: ``ranker`` on ``movielens-100k``, or on any
``synthetic:...`` variant. History carries over between variants of a family, and — shrunk
harder — between families: a catalogue technique acts on knob roles, so its id means the same
change on every model, and a new model starts from what the others taught. History is only
evidence, never a rule: every hypothesis is still validated against the campaign's baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import fmean, stdev
from typing import Any

from scipy import stats as scipy_stats

EFFECTS = "insights"
"""The collection of per-family hypothesis effects: one document per family and hypothesis."""
WINNERS = "winners"
"""The collection of campaigns' winning changes: one document per campaign."""
COLLECTIONS = (EFFECTS, WINNERS)
"""Everything a campaign leaves for the next ones (what a transfer run copies)."""

PRIOR_WEIGHT = 2.0
"""How many campaigns' worth of evidence the catalogue prior counts for."""


def family(workload: str, dataset: str) -> str:
    """``ranker`` + ``synthetic:rows=20000,crosses=2`` -> ``ranker/synthetic``."""
    return f"{workload}/{dataset.split(':', 1)[0]}"


@dataclass(frozen=True)
class EffectStats:
    """Relative validation-NE gains one hypothesis had in past campaigns (+0.01 = 1% better)."""

    n: int
    mean: float
    low: float | None
    high: float | None

    @classmethod
    def of(cls, effects: list[float], confidence: float = 0.95) -> EffectStats:
        if not effects:
            raise ValueError("no effects")
        mean = fmean(effects)
        if len(effects) < 2:
            return cls(len(effects), mean, None, None)
        spread = stdev(effects) / len(effects) ** 0.5
        half = float(scipy_stats.t.ppf(0.5 + confidence / 2, len(effects) - 1)) * spread
        return cls(len(effects), mean, mean - half, mean + half)

    def shrunk(self, prior: float, weight: float = PRIOR_WEIGHT) -> float:
        """The effect to expect: the past mean pulled toward the prior by ``weight`` pseudo-campaigns."""
        return (self.n * self.mean + weight * prior) / (self.n + weight)

    def describe(self) -> str:
        interval = "" if self.low is None else f", 95% CI [{self.low:+.2%}, {self.high:+.2%}]"
        return f"{self.n} past campaign(s), mean gain {self.mean:+.2%}{interval}"


@dataclass(frozen=True)
class PastWinner:
    campaign_id: str
    changes: dict[str, Any]
    gain: float
    verdict: str


@dataclass(frozen=True)
class History:
    """What the insights DB knows about one family, as the hypothesis service uses it."""

    family: str
    effects: dict[str, EffectStats]
    best: PastWinner | None = None
    elsewhere: dict[str, EffectStats] = field(default_factory=dict)
    """The same hypotheses' effects on every *other* family (other models, other data): what a
    new model starts from before it has history of its own."""

    @classmethod
    def empty(cls, name: str = "") -> History:
        return cls(name, {})

    def expected(self, hypothesis_id: str, prior: float) -> tuple[float, str] | None:
        """The gain to expect from a hypothesis, and the evidence in words; None without any.

        Two levels of shrinkage: the catalogue prior is first pulled toward what the hypothesis
        did on other families, and that toward what it did on this one, each level counting
        the one above it as ``PRIOR_WEIGHT`` campaigns. A technique written against roles keeps
        one id on every workload, so what one model taught reaches the next."""
        other, own = self.elsewhere.get(hypothesis_id), self.effects.get(hypothesis_id)
        if other is None and own is None:
            return None
        expected, notes = prior, []
        if other is not None:
            expected = other.shrunk(expected)
            notes.append(f"on other models and data: {other.describe()}")
        if own is not None:
            expected = own.shrunk(expected)
            notes.append(f"on {self.family}: {own.describe()}")
        return expected, "History " + "; ".join(notes) + f"; expected gain {expected:+.2%}."
