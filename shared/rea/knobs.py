"""Knob schemas: the declared search space of a workload, and the roles its knobs play.

A workload publishes every setting the agent may change as a :class:`Knob`. The planner
validates each config against the schema before a job is ever submitted, so untrusted
configs (from hypotheses, an LLM, or a person's YAML) never reach a trainer unchecked.

A knob may declare a :class:`Role`: what it *means* to a ranking engineer, whatever the
workload calls it. Everything in REA that acts on a particular kind of knob (the technique
catalogue, the runbook, the cost model, fidelity, the search) finds it through its role, so a
workload is free to name its knobs as its team does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

KnobType = Literal["int", "float", "bool", "categorical"]


class Role(StrEnum):
    """The vocabulary of knob roles, with the value each role's knob must take.

    A role states a contract on the knob's *values*, so that a technique written against the
    role means the same on every workload:

    - ``learning_rate``: float > 0, the optimiser's peak step size.
    - ``batch_size``: int > 0, training examples per optimiser step.
    - ``epochs``: int >= 1, passes over the training data (a fidelity knob).
    - ``data_fraction``: float in (0, 1], share of the training data used (a fidelity knob).
    - ``embedding_dim``: int, width of the sparse features' embeddings.
    - ``hash_buckets``: int, rows per hashed embedding table; 0 keeps exact ids.
    - ``weight_decay``: float >= 0, L2 / decoupled decay on dense weights; 0 disables it.
    - ``embedding_l2``: float >= 0, L2 penalty on looked-up embeddings; 0 disables it.
    - ``dropout``: float in [0, 1), dropout probability in the dense tower; 0 disables it.
    - ``grad_clip``: float >= 0, maximum global gradient norm; 0 disables clipping.
    - ``optimizer``: categorical; choices named ``adam``, ``adamw``, ``adagrad``, ``sgd`` are
      understood as those optimisers (others are left to schema-derived hypotheses).
    - ``lr_schedule``: categorical; ``constant``, ``cosine`` and ``warmup_cosine`` are understood.
    - ``embedding_optimizer``: categorical, how the embedding tables train; ``dense`` (with the
      ``optimizer`` role's optimiser), ``adagrad``, ``rowwise_adagrad`` (one sum per row) and
      ``sparse_adam`` (lazy Adam) on sparse gradients are understood.
    - ``cross_layers``: int >= 0, explicit feature-cross layers (DCN-v2 style); 0 disables them.
    - ``cross_rank``: int >= 0, rank of each cross layer's weight; 0 means full rank.
    - ``fm_term``: bool, a factorisation-machine pairwise interaction term.
    - ``mlp_width``: int, units per hidden layer of the dense tower.
    - ``mlp_depth``: int >= 1, hidden layers of the dense tower.
    - ``normalisation``: bool, layer normalisation in the dense tower.
    - ``attention_layers`` / ``attention_heads``: int, self-attention over feature embeddings
      (AutoInt style).
    - ``temperature``: float > 0, the logit scale of a similarity score (two-tower models).
    - ``evolved_kernels``: bool, run the kernel registry's kernels for the job's device where
      it has them (PyTorch elsewhere). An *execution* knob: it changes speed, never what the
      model computes beyond float tolerance, so it is set by a person and never searched.

    Extend it as models need: a new role is a new member here and its contract above.
    """

    LEARNING_RATE = "learning_rate"
    BATCH_SIZE = "batch_size"
    EPOCHS = "epochs"
    DATA_FRACTION = "data_fraction"
    EMBEDDING_DIM = "embedding_dim"
    HASH_BUCKETS = "hash_buckets"
    WEIGHT_DECAY = "weight_decay"
    EMBEDDING_L2 = "embedding_l2"
    DROPOUT = "dropout"
    GRAD_CLIP = "grad_clip"
    OPTIMIZER = "optimizer"
    EMBEDDING_OPTIMIZER = "embedding_optimizer"
    LR_SCHEDULE = "lr_schedule"
    CROSS_LAYERS = "cross_layers"
    CROSS_RANK = "cross_rank"
    FM_TERM = "fm_term"
    MLP_WIDTH = "mlp_width"
    MLP_DEPTH = "mlp_depth"
    NORMALISATION = "normalisation"
    ATTENTION_LAYERS = "attention_layers"
    ATTENTION_HEADS = "attention_heads"
    TEMPERATURE = "temperature"
    EVOLVED_KERNELS = "evolved_kernels"


FIDELITY_ROLES = frozenset({Role.EPOCHS, Role.DATA_FRACTION})
"""Roles that trade accuracy for cost: their knobs are fidelity knobs whatever they declare."""
EXECUTION_ROLES = frozenset({Role.EVOLVED_KERNELS})
"""Roles that change how a model runs, not what it computes: their knobs are execution knobs."""


class Knob(BaseModel):
    """One tunable setting: its type, legal range, default and the technique it belongs to."""

    name: str
    type: KnobType
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None
    technique: str = Field(
        default="", description="The ranking technique this knob expresses, e.g. 'dcn_v2'."
    )
    description: str = ""
    role: Role | None = Field(default=None, description="What the knob means to REA (see :class:`Role`).")
    fidelity: bool = Field(
        default=False,
        description="True for knobs that trade accuracy for cost; implied by the epochs and "
        "data-fraction roles.",
    )
    execution: bool = Field(
        default=False,
        description="True for knobs that change how the model runs (its speed), not its quality: "
        "carried from the baseline, never searched; implied by the evolved-kernels role.",
    )

    @model_validator(mode="after")
    def _check_declaration(self) -> Knob:
        if self.role in FIDELITY_ROLES:
            self.fidelity = True
        if self.role in EXECUTION_ROLES:
            self.execution = True
        if self.type in ("int", "float"):
            if self.low is None or self.high is None or self.low > self.high:
                raise ValueError(f"knob {self.name!r}: numeric knobs need low <= high")
            if self.log and self.low <= 0:
                raise ValueError(f"knob {self.name!r}: a log-scale knob needs low > 0")
        if self.type == "categorical" and not self.choices:
            raise ValueError(f"knob {self.name!r}: categorical knobs need choices")
        error = self.check(self.default)
        if error:
            raise ValueError(f"knob {self.name!r}: default is invalid: {error}")
        return self

    @property
    def tunable(self) -> bool:
        """Whether a search or a hypothesis may change it: every knob but the fidelity and
        execution knobs, which the planner sets (fidelity) or a person does (execution)."""
        return not (self.fidelity or self.execution)

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is not legal for this knob, or None when it is."""
        if self.type == "bool":
            return None if isinstance(value, bool) else f"{self.name} must be true or false, got {value!r}"
        if self.type == "categorical":
            assert self.choices is not None
            return (
                None
                if any(value == c and type(value) is type(c) for c in self.choices)
                else f"{self.name} must be one of {self.choices}, got {value!r}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{self.name} must be a number, got {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{self.name} must be finite, got {value!r}"
        if self.type == "int" and isinstance(value, float) and not value.is_integer():
            return f"{self.name} must be an integer, got {value!r}"
        assert self.low is not None and self.high is not None
        if not self.low <= value <= self.high:
            return f"{self.name}={value!r} is outside [{_fmt(self.low)}, {_fmt(self.high)}]"
        return None

    def coerce(self, value: Any) -> Any:
        """Normalise a legal value to the knob's Python type (e.g. 3.0 -> 3 for an int knob)."""
        if self.type == "int":
            return int(value)
        if self.type == "float":
            return float(value)
        return value


class KnobSchema(BaseModel):
    """The whole search space of a workload, keyed by knob name."""

    knobs: list[Knob]

    @model_validator(mode="after")
    def _unique_names(self) -> KnobSchema:
        names = [k.name for k in self.knobs]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"duplicate knob names: {sorted(duplicates)}")
        roles = [k.role for k in self.knobs if k.role is not None]
        shared = {str(r) for r in roles if roles.count(r) > 1}
        if shared:
            raise ValueError(f"a role may be declared by one knob only: {sorted(shared)}")
        return self

    def knob(self, role: Role) -> Knob | None:
        """The knob that plays ``role``, if the workload declares one."""
        return next((k for k in self.knobs if k.role == role), None)

    def roles(self) -> dict[Role, str]:
        """Each declared role and the name of its knob."""
        return {k.role: k.name for k in self.knobs if k.role is not None}

    def by_role(self, config: Mapping[str, Any]) -> dict[Role, Any]:
        """The values of ``config``'s role knobs, keyed by role (knobs ``config`` lacks are left out)."""
        return {role: config[name] for role, name in self.roles().items() if name in config}

    def bind(self, changes: Mapping[Role, Any]) -> dict[str, Any]:
        """Changes written against roles as changes to this workload's knobs; raises
        ``KeyError(role)`` for a role no knob plays."""
        names = self.roles()
        return {names[role]: value for role, value in changes.items()}

    def role_value(self, config: Mapping[str, Any], role: Role, default: Any) -> Any:
        """``config``'s value for ``role``, or ``default`` when no knob (or no value) plays it."""
        knob = self.knob(role)
        return default if knob is None else config.get(knob.name, default)

    def __getitem__(self, name: str) -> Knob:
        for knob in self.knobs:
            if knob.name == name:
                return knob
        raise KeyError(name)

    def names(self) -> list[str]:
        return [k.name for k in self.knobs]

    def defaults(self) -> dict[str, Any]:
        return {k.name: k.default for k in self.knobs}

    def errors(self, overrides: dict[str, Any]) -> list[str]:
        """Every reason why ``overrides`` is not a legal partial config (empty when it is)."""
        known = {k.name: k for k in self.knobs}
        problems = []
        for name, value in overrides.items():
            knob = known.get(name)
            if knob is None:
                problems.append(f"unknown knob {name!r}")
                continue
            error = knob.check(value)
            if error:
                problems.append(error)
        return problems

    def resolve(self, overrides: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
        """``base`` (the defaults if None) updated with ``overrides``; raises ValueError naming
        every bad value."""
        problems = self.errors(overrides)
        if problems:
            raise ValueError("; ".join(problems))
        config = dict(base) if base is not None else self.defaults()
        config.update({name: self[name].coerce(value) for name, value in overrides.items()})
        return config


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
