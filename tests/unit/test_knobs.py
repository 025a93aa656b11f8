"""Knob and KnobSchema: declaration checks, value checks and resolution."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from rea.knobs import Knob, KnobSchema


def int_knob(**kw: object) -> Knob:
    args: dict[str, object] = {
        "name": "epochs",
        "type": "int",
        "low": 1,
        "high": 30,
        "default": 3,
        "technique": "fidelity",
    }
    return Knob(**{**args, **kw})


def float_knob(**kw: object) -> Knob:
    args: dict[str, object] = {
        "name": "lr",
        "type": "float",
        "low": 1e-4,
        "high": 0.05,
        "log": True,
        "default": 1e-3,
        "technique": "learning_rate",
    }
    return Knob(**{**args, **kw})


@pytest.fixture
def schema() -> KnobSchema:
    return KnobSchema(
        knobs=[
            int_knob(),
            float_knob(),
            Knob(name="fm", type="bool", default=False, technique="fm"),
            Knob(
                name="optimizer", type="categorical", choices=["adam", "sgd"], default="adam", technique="opt"
            ),
        ]
    )


# ---- declaration checks -------------------------------------------------------------


def test_numeric_knob_with_low_above_high_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"knob 'epochs': numeric knobs need low <= high"):
        int_knob(low=10, high=5, default=7)


@pytest.mark.parametrize("missing", ["low", "high"])
def test_numeric_knob_needs_both_bounds(missing: str) -> None:
    with pytest.raises(ValidationError, match="numeric knobs need low <= high"):
        int_knob(**{missing: None})


@pytest.mark.parametrize("low", [0.0, -1.0])
def test_log_knob_with_non_positive_low_is_refused(low: float) -> None:
    with pytest.raises(ValidationError, match=r"knob 'lr': a log-scale knob needs low > 0"):
        float_knob(low=low)


def test_linear_knob_may_start_at_zero() -> None:
    assert float_knob(low=0.0, log=False).low == 0.0


@pytest.mark.parametrize("choices", [None, []])
def test_categorical_knob_needs_choices(choices: list[str] | None) -> None:
    with pytest.raises(ValidationError, match=r"knob 'opt': categorical knobs need choices"):
        Knob(name="opt", type="categorical", choices=choices, default="adam", technique="opt")


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: int_knob(default=99), r"default is invalid: epochs=99 is outside \[1, 30\]"),
        (lambda: int_knob(default=2.5), r"default is invalid: epochs must be an integer"),
        (
            lambda: Knob(name="fm", type="bool", default=0, technique="fm"),
            "default is invalid: fm must be true or false",
        ),
        (
            lambda: Knob(name="o", type="categorical", choices=["a"], default="b", technique="t"),
            r"default is invalid: o must be one of \['a'\]",
        ),
    ],
)
def test_invalid_default_is_refused(make: Callable[[], Knob], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        make()


# ---- value checks -------------------------------------------------------------------


def test_legal_values_pass(schema: KnobSchema) -> None:
    assert schema.errors({"epochs": 30, "lr": 0.05, "fm": True, "optimizer": "sgd"}) == []
    assert schema["epochs"].check(1) is None
    assert schema["epochs"].check(4.0) is None  # an integral float is a legal int


def test_out_of_range_message_names_knob_value_and_bounds(schema: KnobSchema) -> None:
    assert schema["epochs"].check(31) == "epochs=31 is outside [1, 30]"
    assert schema["lr"].check(0.5) == "lr=0.5 is outside [0.0001, 0.05]"
    assert schema["epochs"].check(0) == "epochs=0 is outside [1, 30]"


@pytest.mark.parametrize("value", ["3", None, [3], {"v": 3}])
def test_wrong_type_for_number(schema: KnobSchema, value: object) -> None:
    assert schema["epochs"].check(value) == f"epochs must be a number, got {value!r}"


def test_fractional_value_for_int_knob(schema: KnobSchema) -> None:
    assert schema["epochs"].check(2.5) == "epochs must be an integer, got 2.5"


@pytest.mark.parametrize("value", [True, False])
def test_bool_is_not_a_number(schema: KnobSchema, value: bool) -> None:
    assert schema["epochs"].check(value) == f"epochs must be a number, got {value!r}"
    assert schema["lr"].check(value) == f"lr must be a number, got {value!r}"


@pytest.mark.parametrize("value", [0, 1, "true", None])
def test_number_is_not_a_bool(schema: KnobSchema, value: object) -> None:
    assert schema["fm"].check(value) == f"fm must be true or false, got {value!r}"


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_float_is_refused(schema: KnobSchema, value: float) -> None:
    assert schema["lr"].check(value) == f"lr must be finite, got {value!r}"


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_non_finite_value_for_int_knob_is_refused(schema: KnobSchema, value: float) -> None:
    assert schema["epochs"].check(value) is not None


def test_categorical_outside_choices(schema: KnobSchema) -> None:
    assert schema["optimizer"].check("rmsprop") == "optimizer must be one of ['adam', 'sgd'], got 'rmsprop'"


def test_unknown_knob_is_reported_and_other_problems_too(schema: KnobSchema) -> None:
    problems = schema.errors({"warp_drive": 9, "epochs": 99, "lr": 0.001})
    assert problems == ["unknown knob 'warp_drive'", "epochs=99 is outside [1, 30]"]


def test_huge_int_is_reported_not_raised(schema: KnobSchema) -> None:
    assert schema.errors({"epochs": 10**400}) == [f"epochs={10**400!r} is outside [1, 30]"]


# ---- resolve ------------------------------------------------------------------------


def test_resolve_starts_from_defaults(schema: KnobSchema) -> None:
    assert schema.resolve({"fm": True}) == {"epochs": 3, "lr": 1e-3, "fm": True, "optimizer": "adam"}


def test_resolve_merges_onto_base_without_mutating_it(schema: KnobSchema) -> None:
    base = {"epochs": 5, "lr": 0.01, "fm": False, "optimizer": "sgd"}
    resolved = schema.resolve({"lr": 0.02}, base=base)
    assert resolved == {"epochs": 5, "lr": 0.02, "fm": False, "optimizer": "sgd"}
    assert base["lr"] == 0.01


def test_resolve_coerces_to_knob_type() -> None:
    schema = KnobSchema(knobs=[int_knob(), float_knob(name="clip", low=0, high=10, log=False, default=0.0)])
    resolved = schema.resolve({"epochs": 7.0, "clip": 2})
    assert resolved == {"epochs": 7, "clip": 2.0}
    assert type(resolved["epochs"]) is int
    assert type(resolved["clip"]) is float


def test_resolve_raises_naming_every_problem(schema: KnobSchema) -> None:
    with pytest.raises(ValueError) as caught:
        schema.resolve({"epochs": 0, "nope": 1})
    assert str(caught.value) == "epochs=0 is outside [1, 30]; unknown knob 'nope'"


def test_schema_refuses_duplicate_names() -> None:
    with pytest.raises(ValidationError, match=r"duplicate knob names: \['epochs'\]"):
        KnobSchema(knobs=[int_knob(), float_knob(), int_knob(default=4)])


def test_schema_lookup_and_listing(schema: KnobSchema) -> None:
    assert schema.names() == ["epochs", "lr", "fm", "optimizer"]
    assert schema.defaults() == {"epochs": 3, "lr": 1e-3, "fm": False, "optimizer": "adam"}
    with pytest.raises(KeyError):
        schema["nope"]
