"""Search over a kernel template's parameters: Monte-Carlo tree search plus evolution.

A template's parameters (block sizes, vector width, threads, loop order, unroll...) span a
discrete grid; each point renders to a candidate kernel that an evaluator compiles, checks and
times. One evaluation takes seconds, so a search is judged by what it finds within a fixed
number of evaluations, against uniform random search at the same budget (:func:`compare`).

:func:`mcts_evolution` has two ways to propose the next point:

- a tree that fixes one parameter per level, in the space's order, and chooses by UCT over
  normalised rewards (``best cost / cost``, a failure 0). It learns which prefixes pay off,
  and it is exhaustive: a small space ends cleanly instead of looping on repeats.
- evolution over the ``top_k`` cheapest points: mutation (one or two parameters moved to a
  neighbouring or a random choice) and uniform crossover of two parents. It refines what the
  tree found, since in kernel landscapes good points have good neighbours.

Each proposer drafts several fresh points (the tree several rollouts below the prefix it
selected), and a model of the costs so far picks the one to evaluate: Bayesian ridge regression
(scikit-learn's) of log cost on each parameter's choice, by the lowest lower confidence bound
(mean minus one standard deviation). A kernel's time is roughly a product of per-parameter
factors (a loop order five times slower, a thread count 1.7 times), which a model additive in
log cost learns from a handful of evaluations; the proposers keep the search where the model
is blind (interactions, failing regions), and the bound's width keeps it trying untried choices.
Where the model explains little (no such product), the proposers' first drafts go unscreened.

Which one proposes: the tree alone for the first ``warmup`` evaluations (its untried choices
come first, so they spread over the space). Then, on two turns of every three, the cost model
itself: the cheapest fresh point under one draw of its coefficients from their posterior
(Thompson sampling over the whole grid, where the proposers see only their drafts); and on the
third a bandit, Thompson sampling over tree, mutation and crossover, each scored by how often
its last ``window`` proposals entered the top k. The tree explores, evolution refines while
refining pays, and the tree takes over again when it stops paying; they keep the search going
where the model is wrong, and where it is not trusted they have every turn. An arm that cannot
propose a fresh point (crossover of parents that have become alike) falls back to the next
(crossover, mutation, tree) and is scored a miss.

Why the model proposes too: on a landscape fitted to 574 measured dense-layer kernels
(``python -m rea_bench.landscape``), with the measurements' own noise, 300 seeds of 40
evaluations judged as ``rea kernels bench`` judges, its turns raised the seeds on which the
search matched random search's best within half the budget from 211 to 215 and cut those on
which it never did from 44 to 31; its final result's fitted cost went from 0.508 to 0.498
(random search 0.570, Optuna's TPE 0.510). On the CPU itself, in 5 seeds over two runs, the
goal was met on 2.

Nothing here knows about kernels: a point is a plain mapping, a cost is a float or None.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import random
import statistics
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.linear_model import BayesianRidge
from threadpoolctl import ThreadpoolController

from rea.kernels import ParamValue

Point = dict[str, ParamValue]
Evaluate = Callable[[Mapping[str, ParamValue]], float | None]
"""The cost of a point, lower is better (median seconds), or None when its candidate failed
(incorrect, crashed, timed out). A cost must be finite and positive: rewards divide by it."""

Constraint = Callable[[Mapping[str, ParamValue]], bool]
Proposer = Literal["initial", "tree", "mutation", "crossover", "model", "random"]
Arm = Literal["tree", "mutation", "crossover"]
"""The bandit's arms; the cost model proposes on turns of its own (:func:`mcts_evolution`)."""
Turn = Arm | Literal["model"]
"""Who proposes on a turn: an arm, or the cost model."""

_Key = tuple[int, ...]
"""A point as the index of its choice for every parameter, in the space's order."""

_MISSES_BEFORE_ENUMERATING = 64
_TRIES_PER_PROPOSAL = 32
_MODEL_POOL = 256
"""Fresh points drawn uniformly for the cost model's proposal to choose among, beside its own
optimum and that optimum's neighbours (for when the optimum was evaluated or is ruled out)."""
_SLOW = math.log(2.0)
"""The screening model's ceiling on log cost, above the best so far: a point more than twice as
slow as the best, or failed, counts as twice as slow. How much slower does not matter for where
to look next, and one pathological point (a loop order fifty times slower with one thread count
only) would otherwise pull every estimate its choices share. Failures cluster (tiles too big, an
unsupported vector width), so the model steers away from their choices, as from slow ones."""
_MODEL_FIT = 0.5
"""The share of variance (R²) the screening model must explain before its picks are trusted."""
_FALLBACKS: Mapping[Arm, tuple[Arm, ...]] = {
    "crossover": ("crossover", "mutation", "tree"),
    "mutation": ("mutation", "tree"),
    "tree": ("tree",),
}


class SearchSpace:
    """The grid a template's parameters span, and the points in it worth evaluating.

    ``parameters`` maps each name to its distinct choices (a target's ``search_space(operator)``
    is one). Order matters twice: the tree fixes parameters in this order, so put the ones that
    decide most (block sizes) first; and mutation steps to a neighbouring choice, so list numeric
    choices in increasing order. ``constraint`` rules points out before they are proposed (a
    block size that must divide the problem size): no evaluation is spent on them.
    """

    def __init__(
        self, parameters: Mapping[str, Iterable[ParamValue]], constraint: Constraint | None = None
    ) -> None:
        choices = {name: tuple(values) for name, values in parameters.items()}
        for name, values in choices.items():
            if not values or len({_typed(value) for value in values}) != len(values):
                raise ValueError(f"parameter {name!r} needs distinct choices, got {values!r}")
        self.parameters: Mapping[str, tuple[ParamValue, ...]] = MappingProxyType(choices)
        self.constraint = constraint
        self._widths = tuple(len(values) for values in choices.values())
        self._indices = tuple(
            {_typed(value): index for index, value in enumerate(values)} for values in choices.values()
        )

    def __repr__(self) -> str:
        return f"SearchSpace({dict(self.parameters)!r}, constraint={self.constraint!r})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.parameters)

    @property
    def size(self) -> int:
        """Points in the grid, before the constraint: what exhaustive search would cost at most."""
        return math.prod(self._widths)

    def points(self) -> Iterator[Point]:
        """Every admitted point, in grid order (the last parameter varies fastest)."""
        for key in self._keys():
            if self._admits(key):
                yield self._point(key)

    def admits(self, point: Mapping[str, ParamValue]) -> bool:
        """Whether ``point`` sets exactly this space's parameters to their choices and passes
        the constraint."""
        try:
            self.validate(point)
        except ValueError:
            return False
        return True

    def validate(self, point: Mapping[str, ParamValue]) -> Point:
        """``point`` in the space's order, or ValueError saying why the space does not admit it."""
        key = self._key(point)
        if not self._admits(key):
            raise ValueError(f"{dict(point)!r} violates the space's constraint")
        return self._point(key)

    def sample(self, rng: random.Random) -> Point:
        """An admitted point drawn uniformly; ValueError when the constraint admits none."""
        drawn = self.draw(1, rng)
        if not drawn:
            raise ValueError("the constraint admits no point of this space")
        return drawn[0]

    def draw(self, count: int, rng: random.Random) -> list[Point]:
        """Up to ``count`` distinct admitted points (fewer where fewer are admitted), drawn
        uniformly without replacement."""
        drawn: dict[_Key, None] = {}  # in the order drawn
        for key in self._uniform_keys(rng, taken=drawn):
            if len(drawn) == count:
                break
            drawn[key] = None
        return [self._point(key) for key in drawn]

    def _key(self, point: Mapping[str, ParamValue]) -> _Key:
        if set(point) != set(self.parameters):
            raise ValueError(f"{dict(point)!r} does not set exactly the parameters {list(self.parameters)}")
        key = []
        for (name, values), indices in zip(self.parameters.items(), self._indices, strict=True):
            index = indices.get(_typed(point[name]))
            if index is None:
                raise ValueError(f"{name}={point[name]!r} is not one of its choices {values!r}")
            key.append(index)
        return tuple(key)

    def _point(self, key: _Key) -> Point:
        return {
            name: values[index] for (name, values), index in zip(self.parameters.items(), key, strict=True)
        }

    def _admits(self, key: _Key) -> bool:
        return self.constraint is None or self.constraint(self._point(key))

    def _keys(self) -> Iterator[_Key]:
        return itertools.product(*(range(width) for width in self._widths))

    def _uniform_keys(self, rng: random.Random, taken: Container[_Key]) -> Iterator[_Key]:
        """Admitted keys not in ``taken`` (read as it grows), uniformly without replacement.

        Rejection sampling while it hits; after a run of misses (a nearly exhausted space, a
        tight constraint) the shuffled remainder, so a small space ends instead of spinning.
        """
        misses = 0
        while misses < _MISSES_BEFORE_ENUMERATING:
            key = tuple(rng.randrange(width) for width in self._widths)
            if key in taken or not self._admits(key):
                misses += 1
                continue
            misses = 0
            yield key
        remainder = [key for key in self._keys() if key not in taken and self._admits(key)]
        rng.shuffle(remainder)
        yield from (key for key in remainder if key not in taken)


def _typed(value: ParamValue) -> tuple[type, ParamValue]:
    """A choice with its type, so ``True`` and ``1`` stay different choices."""
    return type(value), value


class Evaluation(BaseModel):
    """One evaluated point, with what proposed it."""

    model_config = ConfigDict(frozen=True)

    point: dict[str, ParamValue]
    cost: float | None
    proposer: Proposer


class SearchTrace(BaseModel):
    """Every evaluation of one search, in order: the data a benchmark curve is drawn from."""

    model_config = ConfigDict(frozen=True)

    method: Literal["mcts_evolution", "random"]
    budget: int
    evaluations: tuple[Evaluation, ...]

    @property
    def best(self) -> Evaluation | None:
        """The cheapest successful evaluation (the earliest among equals); None if all failed."""
        successes = [evaluation for evaluation in self.evaluations if evaluation.cost is not None]
        return min(successes, key=lambda evaluation: _cost(evaluation.cost), default=None)

    @property
    def best_cost(self) -> float | None:
        return None if self.best is None else self.best.cost

    def best_so_far(self) -> list[float | None]:
        """The best cost after each evaluation; None until the first success."""
        curve: list[float | None] = []
        best: float | None = None
        for evaluation in self.evaluations:
            if evaluation.cost is not None and (best is None or evaluation.cost < best):
                best = evaluation.cost
            curve.append(best)
        return curve

    def evaluations_to_reach(self, cost: float) -> int | None:
        """How many evaluations (1-based) it took until the best cost was ``cost`` or lower; None
        if it never was."""
        reached = (
            count for count, best in enumerate(self.best_so_far(), 1) if best is not None and best <= cost
        )
        return next(reached, None)


def _cost(cost: float | None) -> float:
    return math.inf if cost is None else cost


class _Log:
    """The evaluations of one search: its budget, the cache that keeps a point from being
    evaluated twice (failures included), and the record its trace is made of."""

    def __init__(self, space: SearchSpace, evaluate: Evaluate, budget: int) -> None:
        if budget < 0:
            raise ValueError(f"budget must be non-negative, got {budget}")
        self.space = space
        self.budget = budget
        self.costs: dict[_Key, float | None] = {}
        self._evaluate = evaluate
        self._evaluations: list[Evaluation] = []

    @property
    def count(self) -> int:
        return len(self._evaluations)

    @property
    def remaining(self) -> int:
        return self.budget - self.count

    def fresh(self, key: _Key) -> bool:
        return key not in self.costs and self.space._admits(key)

    def evaluate(self, key: _Key, proposer: Proposer) -> float | None:
        point = self.space._point(key)
        result = self._evaluate(dict(point))
        cost = None if result is None else float(result)
        if cost is not None and not (math.isfinite(cost) and cost > 0):
            raise ValueError(
                f"evaluate returned {result!r} for {point!r}: a cost must be finite and positive"
            )
        self.costs[key] = cost
        self._evaluations.append(Evaluation(point=point, cost=cost, proposer=proposer))
        return cost

    def evaluate_initial(self, points: Iterable[Mapping[str, ParamValue]]) -> list[tuple[_Key, float | None]]:
        """Evaluate the given points first, in order, skipping repeats, while the budget lasts."""
        evaluated = []
        for key in dict.fromkeys(self.space._key(self.space.validate(point)) for point in points):
            if self.remaining == 0:
                break
            evaluated.append((key, self.evaluate(key, "initial")))
        return evaluated

    def trace(self, method: Literal["mcts_evolution", "random"]) -> SearchTrace:
        return SearchTrace(method=method, budget=self.budget, evaluations=tuple(self._evaluations))


def random_search(
    space: SearchSpace,
    evaluate: Evaluate,
    budget: int,
    seed: int,
    *,
    initial: Iterable[Mapping[str, ParamValue]] = (),
) -> SearchTrace:
    """Uniform sampling without replacement: the peer :func:`mcts_evolution` must beat at equal
    evaluations. ``initial`` points are evaluated first, as for :func:`mcts_evolution`."""
    log = _Log(space, evaluate, budget)
    log.evaluate_initial(initial)
    for key in itertools.islice(space._uniform_keys(random.Random(seed), taken=log.costs), log.remaining):
        log.evaluate(key, "random")
    return log.trace("random")


def mcts_evolution(
    space: SearchSpace,
    evaluate: Evaluate,
    budget: int,
    seed: int,
    *,
    initial: Iterable[Mapping[str, ParamValue]] = (),
    top_k: int = 3,
    exploration: float = 0.5,
    warmup: int = 16,
    window: int = 20,
    drafts: int = 8,
    model_share: float = 2 / 3,
) -> SearchTrace:
    """Find a cheap point in ``budget`` evaluations or fewer (fewer only when every admitted
    point has been evaluated), never evaluating one twice.

    ``initial`` points (the template's default, the registry's best so far) are evaluated
    first. ``top_k`` is evolution's parent pool, ``exploration`` the UCT constant (rewards lie
    in [0, 1]), ``warmup`` the number of evaluations before evolution may propose, ``window``
    how many recent outcomes of each arm the bandit weighs, ``drafts`` how many points a
    proposer drafts for the model to screen (1: no screening), ``model_share`` the share of the
    proposals after the warm-up that the cost model makes itself (0: none; the rules are in the
    module's docstring). The same seed and the same costs give the same trace, and the budget only stops
    the search: a longer run starts with the shorter one's evaluations.
    """
    if top_k < 2 or warmup < 0 or window < 1 or exploration < 0 or drafts < 1 or not 0 <= model_share <= 1:
        raise ValueError(
            "need top_k >= 2, warmup >= 0, window >= 1, exploration >= 0, drafts >= 1"
            " and 0 <= model_share <= 1"
        )
    log = _Log(space, evaluate, budget)
    search = _MctsEvolution(log, random.Random(seed), top_k, exploration, warmup, window, drafts, model_share)
    for key, cost in log.evaluate_initial(initial):
        search.record(key, cost)
    # The cost model's matrices are a few hundred rows: BLAS threads gain nothing there, and
    # their spinning doubled a proposal's CPU and, beside other work, quintupled its time.
    one_thread = ThreadpoolController()
    while log.remaining > 0:
        arm = search.choose_arm()
        with one_thread.limit(limits=1, user_api="blas"):
            proposal = search.propose(arm)
        if proposal is None:
            break
        key, proposer = proposal
        entered_top = search.record(key, log.evaluate(key, proposer))
        if log.count > warmup and proposer != "model":
            search.outcomes[proposer].append(entered_top)
    return log.trace("mcts_evolution")


@dataclass
class _Node:
    """A prefix: the first ``depth`` parameters fixed. Rewards are kept as a sum of 1/cost, so
    they are normalised by the best cost known when read, not when recorded."""

    depth: int
    children: dict[int, _Node] = field(default_factory=dict)
    visits: int = 0
    inverse_cost_sum: float = 0.0
    exhausted: bool = False


class _MctsEvolution:
    """The state of one :func:`mcts_evolution` run: the tree, per-choice statistics that bias
    its expansions and rollouts, the top k, and the bandit's recent outcomes per arm."""

    def __init__(
        self,
        log: _Log,
        rng: random.Random,
        top_k: int,
        exploration: float,
        warmup: int,
        window: int,
        drafts: int,
        model_share: float,
    ) -> None:
        self.log = log
        self.rng = rng
        self.top_k = top_k
        self.exploration = exploration
        self.warmup = warmup
        self.drafts = drafts
        self.model_share = model_share
        self.turns = 0
        self.widths = log.space._widths
        self.root = _Node(depth=0)
        self.choice_visits = [[0] * width for width in self.widths]
        self.choice_inverse_costs = [[0.0] * width for width in self.widths]
        self.best_cost: float | None = None
        self.top: list[tuple[float, int, _Key]] = []
        self.outcomes: dict[Arm, deque[bool]] = {
            arm: deque(maxlen=window) for arm in ("tree", "mutation", "crossover")
        }
        self.fitted: tuple[int, BayesianRidge | None] = (-1, None)

    def record(self, key: _Key, cost: float | None) -> bool:
        """Credit ``cost`` to the tree nodes on ``key``'s path and to its choices; True if it
        entered the top k."""
        inverse_cost = 0.0 if cost is None else 1.0 / cost
        node: _Node | None = self.root
        for depth, index in enumerate(key):
            if node is not None:
                node.visits += 1
                node.inverse_cost_sum += inverse_cost
                node = node.children.get(index)
            self.choice_visits[depth][index] += 1
            self.choice_inverse_costs[depth][index] += inverse_cost
        if node is not None:
            node.visits += 1
            node.inverse_cost_sum += inverse_cost
        if cost is None or (len(self.top) == self.top_k and cost >= self.top[-1][0]):
            return False
        bisect.insort(self.top, (cost, self.log.count, key))
        del self.top[self.top_k :]
        self.best_cost = self.top[0][0]
        return True

    def choose_arm(self) -> Turn:
        """The tree alone until ``warmup`` evaluations and two successes. Then the cost model on
        ``model_share`` of the turns, spread evenly (for 2/3: the bandit, the model, the model,
        the bandit...), and the bandit on the others: Thompson sampling, where each arm draws
        from Beta(1 + entered, 1 + missed) over its last ``window`` proposals (entered = the point
        entered the top k) and the highest draw proposes. An arm that stops
        paying (evolution stuck in a basin, the tree lost in a failing region) fades; an arm not
        chosen keeps its old record, so it is tried again once the others do worse."""
        if self.log.count < self.warmup or len(self.top) < 2:
            return "tree"
        self.turns += 1
        if math.floor(self.turns * self.model_share) > math.floor((self.turns - 1) * self.model_share):
            return "model"
        return self.bandit()

    def bandit(self) -> Arm:
        """The arm with the highest draw from Beta(1 + entered, 1 + missed)."""

        def draw(arm: Arm) -> float:
            entered = sum(self.outcomes[arm])
            return self.rng.betavariate(1 + entered, 1 + len(self.outcomes[arm]) - entered)

        arms: tuple[Arm, ...] = ("tree", "mutation", "crossover")
        return max(arms, key=draw)

    def propose(self, arm: Turn) -> tuple[_Key, Turn] | None:
        """The cost model's pick, or the screened draft of ``arm``, falling back (crossover ->
        mutation -> tree) when it drafts no fresh admitted point, which counts as a miss for it
        (crossover fades once the top k are alike); None once the tree finds the whole space
        evaluated. The model's turn goes to the bandit while the model is not trusted."""
        if arm == "model":
            if (key := self.modelled()) is not None:
                return key, "model"
            arm = self.bandit()
        operators: Mapping[Arm, Callable[[], list[_Key]]] = {
            "tree": self.tree,
            "mutation": lambda: self.drafted(self.mutation),
            "crossover": lambda: self.drafted(self.crossover),
        }
        for proposer in _FALLBACKS[arm]:
            if keys := operators[proposer]():
                return self.screened(keys), proposer
            self.outcomes[proposer].append(False)
        return None

    def drafted(self, draft: Callable[[], _Key | None]) -> list[_Key]:
        """Up to ``drafts`` distinct points from ``draft``, in the order drafted; it stops at the
        first None (nothing fresh left to draft)."""
        keys: dict[_Key, None] = {}
        for _ in range(self.drafts):
            if (key := draft()) is None:
                break
            keys[key] = None
        return list(keys)

    def cost_model(self) -> BayesianRidge | None:
        """Bayesian ridge regression of log cost on each parameter's choice over every evaluation
        so far (log costs capped at ``_SLOW`` above the best); None until two evaluations exist,
        while every evaluation failed, and while it explains less than ``_MODEL_FIT`` of the
        variance it was fitted on: on a landscape that is not roughly a product of per-parameter
        factors (a needle in a noisy plateau) its picks would follow noise, and the proposers do
        better alone. Fitted once per evaluation count: the evaluations only ever grow."""
        count, model = self.fitted
        if count != len(self.log.costs):
            model = self.fit_cost_model()
            self.fitted = (len(self.log.costs), model)
        return model

    def fit_cost_model(self) -> BayesianRidge | None:
        evaluated = list(self.log.costs.items())
        successes = [math.log(cost) for _, cost in evaluated if cost is not None]
        if len(evaluated) < 2 or not successes:
            return None
        ceiling = min(successes) + _SLOW
        log_costs = [ceiling if cost is None else min(math.log(cost), ceiling) for _, cost in evaluated]
        features = self.one_hot([key for key, _ in evaluated])
        model = BayesianRidge().fit(features, log_costs)
        return model if model.score(features, log_costs) >= _MODEL_FIT else None

    def modelled(self) -> _Key | None:
        """The cost model's own proposal, by Thompson sampling: the cheapest fresh point under
        one draw of its coefficients from their posterior. The draw's optimum over the whole grid
        is one choice per parameter (the model is additive); where it is evaluated or ruled out,
        the cheapest of its neighbours and ``_MODEL_POOL`` fresh points drawn uniformly. A draw
        rather than the mean keeps choices the model is unsure of in play, in proportion to the
        chance that they are best. None while the model is not trusted or no point is fresh."""
        model = self.cost_model()
        if model is None:
            return None
        generator = np.random.default_rng(self.rng.getrandbits(64))
        coefficients = generator.multivariate_normal(model.coef_, model.sigma_)
        per_parameter = np.split(coefficients, np.cumsum(self.widths)[:-1])
        optimum = tuple(int(np.argmin(choices)) for choices in per_parameter)
        neighbours = (
            (*optimum[:depth], index, *optimum[depth + 1 :])
            for depth, width in enumerate(self.widths)
            for index in range(width)
        )
        drawn = itertools.islice(self.log.space._uniform_keys(self.rng, taken=self.log.costs), _MODEL_POOL)
        pool = [
            key
            for key in dict.fromkeys(itertools.chain((optimum,), neighbours, drawn))
            if self.log.fresh(key)
        ]
        if not pool:
            return None
        return pool[int(np.argmin(self.one_hot(pool) @ coefficients))]

    def screened(self, keys: list[_Key]) -> _Key:
        """The draft with the lowest lower confidence bound on log cost (mean minus one standard
        deviation) by the :meth:`cost_model`; the first draft (as if unscreened) while there is
        no model to trust."""
        if len(keys) == 1 or (model := self.cost_model()) is None:
            return keys[0]
        mean, deviation = model.predict(self.one_hot(keys), return_std=True)
        return keys[int(np.argmin(mean - deviation))]

    def one_hot(self, keys: list[_Key]) -> np.ndarray:
        """Each point as one indicator per parameter choice: the model's features."""
        offsets = np.cumsum((0, *self.widths[:-1]))
        features = np.zeros((len(keys), sum(self.widths)))
        features[np.arange(len(keys))[:, None], offsets + np.array(keys)] = 1.0
        return features

    def tree(self) -> list[_Key]:
        """Select by UCT down to a node with an untried child, expand that child (biased toward
        choices that did well), and complete the point by rollouts, up to ``drafts`` of them.
        A node whose points are all evaluated or ruled out is marked exhausted and never selected
        again; an empty list means the whole space is."""
        while not self.root.exhausted:
            path, prefix = [self.root], []
            while path[-1].depth < len(self.widths):
                node = path[-1]
                untried = [index for index in range(self.widths[node.depth]) if index not in node.children]
                if untried:
                    index = self.ordered_choices(node.depth, untried)[0]
                    node.children[index] = _Node(depth=node.depth + 1)
                else:
                    index = max(node.children, key=lambda index: self.uct(node, node.children[index]))
                path.append(node.children[index])
                prefix.append(index)
                if untried:
                    break
            if keys := self.drafted(functools.partial(self.complete, tuple(prefix), path[-1])):
                return keys
            self.mark_exhausted(path)
        return []

    def uct(self, parent: _Node, child: _Node) -> float:
        if child.exhausted:
            return -math.inf
        mean_reward = (self.best_cost or 0.0) * child.inverse_cost_sum / child.visits
        return mean_reward + self.exploration * math.sqrt(math.log(parent.visits) / child.visits)

    def complete(self, prefix: _Key, node: _Node | None) -> _Key | None:
        """The rollout: complete ``prefix`` (whose tree node is ``node``, if it has one) into a
        fresh admitted point, depth first, trying choices in a random order biased toward the ones
        that did well. The first leaf is usually fresh; when not, the walk backtracks, so None
        means no point is left under the prefix."""
        if node is not None and node.exhausted:
            return None
        if len(prefix) == len(self.widths):
            return prefix if self.log.fresh(prefix) else None
        for index in self.ordered_choices(len(prefix), range(self.widths[len(prefix)])):
            found = self.complete((*prefix, index), node.children.get(index) if node else None)
            if found is not None:
                return found
        return None

    def mark_exhausted(self, path: list[_Node]) -> None:
        """Mark the path's last node exhausted, and each ancestor whose children all are."""
        path[-1].exhausted = True
        for node in reversed(path[:-1]):
            complete = len(node.children) == self.widths[node.depth]
            if not (complete and all(child.exhausted for child in node.children.values())):
                return
            node.exhausted = True

    def ordered_choices(self, depth: int, indices: Iterable[int]) -> list[int]:
        """``indices`` in a random order weighted by each choice's mean normalised reward so far,
        with an optimistic prior of 1 so untried choices come early (Efraimidis-Spirakis)."""
        visits, inverse_costs = self.choice_visits[depth], self.choice_inverse_costs[depth]
        best = self.best_cost or 0.0

        def weight(index: int) -> float:
            return (1.0 + best * inverse_costs[index]) / (1.0 + visits[index])

        return sorted(indices, key=lambda index: self.rng.random() ** (1.0 / weight(index)), reverse=True)

    def mutation(self) -> _Key | None:
        """A top-k point with one or two parameters moved: half the time to a neighbouring
        choice (a small step along ordered choices like block sizes), else to any other."""
        mutable = [depth for depth, width in enumerate(self.widths) if width > 1]
        if not self.top or not mutable:
            return None
        for _ in range(_TRIES_PER_PROPOSAL):
            child = list(self.rng.choice(self.top)[2])
            for depth in self.rng.sample(mutable, min(len(mutable), self.rng.choice((1, 2)))):
                if self.rng.random() < 0.5:
                    steps = [child[depth] + step for step in (-1, 1)]
                    child[depth] = self.rng.choice(
                        [index for index in steps if 0 <= index < self.widths[depth]]
                    )
                else:
                    others = [index for index in range(self.widths[depth]) if index != child[depth]]
                    child[depth] = self.rng.choice(others)
            if self.log.fresh(key := tuple(child)):
                return key
        return None

    def crossover(self) -> _Key | None:
        """Each parameter from one of two distinct top-k parents, chosen by a fair coin."""
        if len(self.top) < 2:
            return None
        for _ in range(_TRIES_PER_PROPOSAL):
            (_, _, first), (_, _, second) = self.rng.sample(self.top, 2)
            key = tuple(self.rng.choice(pair) for pair in zip(first, second, strict=True))
            if self.log.fresh(key):
                return key
        return None


_PointKey = tuple[tuple[str, type, ParamValue], ...]


def _point_key(point: Mapping[str, ParamValue]) -> _PointKey:
    return tuple((name, *_typed(value)) for name, value in point.items())


class _SharedCache:
    """One evaluation per distinct point, shared by the searches compared on one seed: equal
    points cost one evaluation in wall time but count toward each search's own budget."""

    def __init__(self, evaluate: Evaluate) -> None:
        self._evaluate = evaluate
        self.costs: dict[_PointKey, float | None] = {}

    def __call__(self, point: Mapping[str, ParamValue]) -> float | None:
        key = _point_key(point)
        if key not in self.costs:
            self.costs[key] = self._evaluate(point)
        return self.costs[key]


def _settle_leaders(
    traces: Iterable[SearchTrace], evaluate: Evaluate, leaders: int, times: int
) -> tuple[dict[_PointKey, float | None], int]:
    """Measure the ``leaders`` cheapest points of each trace ``times`` more and keep the median
    of all their measurements, until every trace's leaders by these costs have been measured so
    (a leader whose median rose can let another point lead). Returns the settled cost of each
    re-measured point (None if a repeat failed: a flaky candidate loses) and how many there were.

    One timing of a kernel on a shared machine is noisier than most differences between kernels,
    so the cheapest single timing is often a lucky draw: a comparison that counts evaluations to
    reach it measures luck, not search."""
    traces = tuple(traces)
    settled: dict[_PointKey, float | None] = {}

    def current(evaluation: Evaluation) -> float:
        return _cost(settled.get(_point_key(evaluation.point), evaluation.cost))

    while True:
        unsettled = {}
        for trace in traces:
            ranked = sorted((e for e in trace.evaluations if e.cost is not None), key=current)
            for evaluation in ranked[:leaders]:
                if (key := _point_key(evaluation.point)) not in settled:
                    unsettled[key] = evaluation
        if not unsettled:
            return settled, len(settled)
        for key, evaluation in unsettled.items():
            measured = [evaluation.cost, *(evaluate(evaluation.point) for _ in range(times))]
            succeeded = [value for value in measured if value is not None]
            settled[key] = statistics.median(succeeded) if len(succeeded) == len(measured) else None


def _with_costs(trace: SearchTrace, costs: Mapping[_PointKey, float | None]) -> SearchTrace:
    evaluations = tuple(
        e.model_copy(update={"cost": costs[key]}) if (key := _point_key(e.point)) in costs else e
        for e in trace.evaluations
    )
    return trace.model_copy(update={"evaluations": evaluations})


class SeedComparison(BaseModel):
    """Both searches on one seed, and the number of distinct points they evaluated together
    (the wall-time cost, with the shared cache)."""

    model_config = ConfigDict(frozen=True)

    seed: int
    mcts_evolution: SearchTrace
    random: SearchTrace
    distinct_evaluations: int
    remeasured: int = 0
    """Points whose cost in the traces is the median of repeated measurements (see
    :func:`compare`'s ``settle``)."""
    start: tuple[Point, ...] = ()
    """The points both searches began from."""

    @property
    def mcts_evolution_best(self) -> float | None:
        return self.mcts_evolution.best_cost

    @property
    def random_best(self) -> float | None:
        return self.random.best_cost

    @property
    def evaluations_to_reach_random_best(self) -> int | None:
        """What MCTS+evolution spent to match random search's best; 0 when random found no
        working point (nothing to match), None when it never matched it."""
        if self.random_best is None:
            return 0
        return self.mcts_evolution.evaluations_to_reach(self.random_best)


class Comparison(BaseModel):
    """MCTS+evolution against random search at equal budgets, per seed. The goal a benchmark
    checks: on average, MCTS+evolution matches random's best within half the budget."""

    model_config = ConfigDict(frozen=True)

    budget: int
    seeds: tuple[SeedComparison, ...]

    @property
    def misses(self) -> int:
        """Seeds on which MCTS+evolution never matched random search's best."""
        return sum(run.evaluations_to_reach_random_best is None for run in self.seeds)

    @property
    def mean_evaluations_to_reach_random_best(self) -> float | None:
        """The mean over seeds; None when a seed missed, since its count is then unknown (more
        than the budget) and any stand-in would flatter the mean."""
        counts = [run.evaluations_to_reach_random_best for run in self.seeds]
        reached = [count for count in counts if count is not None]
        return sum(reached) / len(reached) if reached and len(reached) == len(counts) else None


def compare(
    space: SearchSpace,
    evaluate: Evaluate,
    budget: int,
    seeds: Iterable[int],
    *,
    initial: Iterable[Mapping[str, ParamValue]] = (),
    drawn_starts: int = 0,
    warmup: int = 16,
    settle: tuple[int, int] = (0, 0),
    model_share: float = 2 / 3,
) -> Comparison:
    """Run :func:`mcts_evolution` (with ``warmup`` and ``model_share``) and :func:`random_search`
    with ``budget`` evaluations each on every seed, through one cache per seed, from the same
    ``initial`` points.

    ``drawn_starts``: that many more starting points per seed, drawn uniformly by the seed and
    the same for both searches. From a template's default alone, a comparison says little
    where the default is already near the best; from drawn points it measures the searches.

    ``settle=(leaders, times)``: for a noisy ``evaluate``, measure each search's ``leaders``
    cheapest points ``times`` more and judge both on the medians (the same for both searches,
    outside their budgets; see :func:`_settle_leaders`)."""
    given = tuple(initial)
    leaders, times = settle
    runs = []
    for seed in seeds:
        start = (*given, *space.draw(drawn_starts, random.Random(f"start-{seed}")))
        cache = _SharedCache(evaluate)
        mcts = mcts_evolution(
            space, cache, budget, seed, initial=start, warmup=warmup, model_share=model_share
        )
        uniform = random_search(space, cache, budget, seed, initial=start)
        remeasured = 0
        if leaders and times:
            settled, remeasured = _settle_leaders((mcts, uniform), evaluate, leaders, times)
            mcts, uniform = _with_costs(mcts, settled), _with_costs(uniform, settled)
        runs.append(
            SeedComparison(
                seed=seed,
                mcts_evolution=mcts,
                random=uniform,
                distinct_evaluations=len(cache.costs),
                remeasured=remeasured,
                start=start,
            )
        )
    return Comparison(budget=budget, seeds=tuple(runs))
