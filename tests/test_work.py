"""Units of work: the groups they are computed in (one pure function, :func:`plan_groups`, for every
engine), a group's call and what becomes of each of its units, run by the local engine."""

from __future__ import annotations

import random
import time

import pytest

from tint_distill.errors import NonFiniteLossError
from tint_distill.execution import UNIT_CLOCK, LocalEngine
from tint_distill.work import (Call, Deferred, Outcome, Stored, Unit, UnitFailed, Work, Worker, is_unit_failure,
                               outcomes_of, plan_groups)


# --- plan_groups ----------------------------------------------------------------------------------


def test_groups_are_cut_in_order_from_the_items_given():
    assert plan_groups(list("abcdefg"), 3) == [list("abc"), list("def"), ["g"]]
    assert plan_groups(list("abc"), 1) == [["a"], ["b"], ["c"]]
    assert plan_groups([], 3) == []


def test_an_item_planned_alone_is_computed_with_nothing_else():
    assert plan_groups(["x"], 4) == [["x"]]


def test_members_kept_apart_never_share_a_group():
    members = [(0, "fish"), (0, "fruit"), (1, "fish"), (1, "clock"), (2, "fish")]
    assert plan_groups(members, 3, apart=lambda m: m[1]) == [
        [(0, "fish"), (0, "fruit"), (1, "clock")], [(1, "fish")], [(2, "fish")]]


@pytest.mark.parametrize("size", [0, -1])
def test_a_group_size_below_one_is_refused(size):
    with pytest.raises(ValueError, match="group_size"):
        plan_groups(["a", "b"], size)
    work = Work.of([Unit("a", "fp", "a")], lambda tasks: Call(_upper, (tasks,)), LocalEngine(), group_size=size)
    with pytest.raises(ValueError, match="group_size"):
        work.groups(list(work.units.values()))


@pytest.mark.parametrize("seed", range(20))
def test_every_item_lands_in_exactly_one_group_of_distinct_kinds(seed):
    rng = random.Random(seed)
    items = [(i, rng.choice("abcd")) for i in range(rng.randrange(0, 25))]
    size = rng.randrange(1, 6)
    groups = plan_groups(items, size, apart=lambda item: item[1])
    assert sorted(i for group in groups for i in group) == items, "each item once, none lost"
    for number, group in enumerate(groups):
        assert 1 <= len(group) <= size
        assert len({kind for _, kind in group}) == len(group), "two items alike never share a group"
        assert group == sorted(group), "a group keeps the items' order"
        placed_before = {i for g in groups[:number] for i in g}
        assert group[0] == next(i for i in items if i not in placed_before), "a group starts at the first unplaced"
    assert plan_groups(items, size, apart=lambda item: item[1]) == groups, "the same plan every time"


def test_work_groups_its_pending_units_with_apart_applied_to_their_tasks():
    units = [Unit(f"episode_000{e}/{name}", "fp", (e, name)) for e, name in
             [(0, "fish"), (0, "fruit"), (1, "fish"), (1, "clock"), (2, "fish")]]
    work = Work.of(units, lambda tasks: Call(_upper, (tasks,)), LocalEngine(), group_size=3, apart=lambda t: t[1])
    assert [[u.key for u in g] for g in work.groups(units)] == [
        ["episode_0000/fish", "episode_0000/fruit", "episode_0001/clock"], ["episode_0001/fish"], ["episode_0002/fish"]]
    missing = [units[1], units[2], units[4]]  # a resumed run: only these are pending
    assert work.groups(missing) == [[units[1], units[2]], [units[4]]] == plan_groups(missing, 3, lambda u: u.task[1])


# --- a group's call and its units' outcomes -------------------------------------------------------


def _upper(worker: Worker, tasks: list) -> list:
    return [str(t).upper() for t in tasks]


def _raises(worker: Worker, error: BaseException):
    raise error


def test_a_call_returns_one_result_per_task():
    worker = Worker()
    assert Call(_upper, (["a", "b"],)).run(worker) == ["A", "B"]
    assert Call(_upper, (["a"],), single=True).run(worker) == [["A"]], "single: the function's value is one result"


@pytest.mark.parametrize("error", [UnitFailed("its input is gone"),
                                   NonFiniteLossError("student", 7, float("nan"), epoch=3, detail="kd=nan"),
                                   NonFiniteLossError("textual_inversion", 2, float("inf"))],
                         ids=["unit", "student", "ti"])
def test_a_unit_failure_raised_by_a_call_is_its_result(error):
    assert is_unit_failure(error)
    assert Call(_raises, (error,)).run(Worker()) is error
    (outcome_a, outcome_b) = outcomes_of([Unit("a", "fp", 1), Unit("b", "fp", 2)], error, 1.0, {"host": "h"})
    assert (outcome_a.key, outcome_b.key) == ("a", "b") and outcome_a.error is outcome_b.error is error
    assert outcome_a.value is None and outcome_a.where == {"host": "h"}


def test_any_other_exception_is_a_bug_that_stops_the_stage():
    assert not is_unit_failure(RuntimeError("CUDA out of memory"))
    assert not is_unit_failure(FloatingPointError("overflow")), "only a NonFiniteLossError is a unit's divergence"
    with pytest.raises(FloatingPointError, match="overflow"):
        Call(_raises, (FloatingPointError("overflow"),)).run(Worker())
    with pytest.raises(RuntimeError, match="out of memory"):
        Call(_raises, (RuntimeError("CUDA out of memory"),)).run(Worker())
    units = [Unit("a", "fp", 1), Unit("b", "fp", 2)]
    outcomes = outcomes_of(units, [{"a": 1}, KeyError("a bug")], 1.0, {})
    assert next(outcomes) == Outcome("a", {"a": 1}, seconds=0.5)
    with pytest.raises(KeyError, match="a bug"):
        next(outcomes)
    with pytest.raises(RuntimeError, match="a call returned 1 results for 2 units"):
        list(outcomes_of(units, ["one"], 1.0, {}))


@pytest.mark.parametrize("error", [UnitFailed("support image missing"),
                                   NonFiniteLossError("student", 7, float("nan"), epoch=3, detail="kd=nan, ce=1.2"),
                                   NonFiniteLossError("null_text_inversion", 4, float("inf"), inner_step=2,
                                                      detail="support fish/01.png, timestep 981")],
                         ids=["unit", "student", "nti"])
def test_a_unit_failure_crosses_to_the_driver_intact(error):
    """Ray pickles a worker's results back to the driver: a unit's failure arrives as it was made,
    its message and its note (which episode and class, added by the inversion stage) included."""
    import pickle

    error.add_note("in episode 0, class 'fish'")
    arrived = pickle.loads(pickle.dumps(error))
    assert type(arrived) is type(error) and str(arrived) == str(error) and is_unit_failure(arrived)
    assert repr(vars(arrived)) == repr(vars(error)), "every attribute (stage, step, loss, ...) and the notes"  # nan != nan
    assert getattr(arrived, "__notes__", None) == ["in episode 0, class 'fish'"]


def test_a_members_own_failure_is_that_members_outcome_alone():
    units = [Unit(k, "fp", k) for k in "abc"]
    diverged = NonFiniteLossError("student", 1, float("nan"), epoch=1)
    outcomes = list(outcomes_of(units, [{"m": "a"}, diverged, {"m": "c"}], 3.0, {"pid": 1}))
    assert [(o.key, o.value, o.error) for o in outcomes] == [("a", {"m": "a"}, None), ("b", None, diverged),
                                                             ("c", {"m": "c"}, None)]
    assert [o.seconds for o in outcomes if o.error is None] == [1.0, 1.0], "each its share of the group's seconds"


def test_a_call_starts_on_the_cpu_and_records_what_it_says_it_uses():
    worker = Worker()
    worker.device = "cuda (left over)"

    def where(worker: Worker) -> str:
        return worker.device

    assert Call(where, single=True).run(worker) == ["cpu"]
    worker.uses("mps")
    assert worker.where()["device"] == "mps" and {"host", "pid"} <= set(worker.where())


# --- the local engine -----------------------------------------------------------------------------


def test_the_local_engine_computes_the_groups_plan_groups_gives_and_keeps_what_workers_load():
    calls, loads = [], []

    def compute(worker: Worker, tasks: list) -> list:
        model = worker.keep("model", lambda: loads.append(1) or "model")
        calls.append(list(tasks))
        return [f"{model}:{t}" for t in tasks]

    units = [Unit(f"k{i}", "fp", i) for i in range(5)]
    work = Work.of(units, lambda tasks: Call(compute, (tasks,)), LocalEngine(), group_size=2, apart=lambda t: t % 3)
    outcomes = list(work.engine.run(work, units))
    assert calls == [[u.task for u in g] for g in plan_groups(units, 2, lambda u: u.task % 3)] == [[0, 1], [2, 3], [4]]
    assert [(o.key, o.value) for o in outcomes] == [(f"k{i}", f"model:{i}") for i in (0, 1, 2, 3, 4)]
    assert loads == [1], "the model is loaded once, for the first group"
    assert all(o.where["device"] == "cpu" and o.seconds >= 0 for o in outcomes)
    calls.clear()
    assert [o.key for o in work.engine.run(work, [units[3]])] == ["k3"] and calls == [[3]], "alone: nothing else"


def test_a_group_whose_inputs_cannot_be_read_fails_alone():
    def call(tasks: list) -> Call:
        if "broken" in tasks:
            raise UnitFailed("support image missing")
        return Call(_upper, (tasks,))

    units = [Unit(k, "fp", k) for k in ("a", "broken", "c")]
    work = Work.of(units, call, LocalEngine(), group_size=1)
    outcomes = {o.key: o for o in work.engine.run(work, units)}
    assert outcomes["a"].value == "A" and outcomes["c"].value == "C"
    assert isinstance(outcomes["broken"].error, UnitFailed) and outcomes["broken"].value is None


def _pause(worker: Worker, tasks: list, seconds: float) -> list:
    time.sleep(seconds)
    return list(tasks)


def test_the_unit_clock_counts_the_units_computation_and_not_the_reading_of_their_inputs():
    def call(tasks: list) -> Call:
        time.sleep(0.2)  # reading a group's inputs, on the driver: the driver's time
        return Call(_pause, (tasks, 0.05))

    units = [Unit(f"k{i}", "fp", i) for i in range(4)]
    work = Work.of(units, call, LocalEngine(), group_size=2)
    seconds, counted = UNIT_CLOCK.seconds, UNIT_CLOCK.units
    outcomes = list(work.engine.run(work, units))
    assert UNIT_CLOCK.units - counted == 4
    assert 2 * 0.05 <= UNIT_CLOCK.seconds - seconds < 2 * 0.2, "two groups computed, their reading left out"
    assert sum(o.seconds for o in outcomes) >= 2 * 0.25, "a unit's recorded seconds still include its reading"


def test_work_of_functions_is_one_unit_per_function_run_here():
    work = Work.of_functions({"x": ("fp-x", lambda: 1), "y": ("fp-y", lambda: 2)})
    assert work.engine.name == "local" and isinstance(work.engine, LocalEngine)
    assert {k: (u.key, u.fingerprint) for k, u in work.units.items()} == {"x": ("x", "fp-x"), "y": ("y", "fp-y")}
    assert [(o.key, o.value) for o in work.engine.run(work, list(work.units.values()))] == [("x", 1), ("y", 2)]


def test_work_and_a_models_training_know_they_were_saved():
    work = Work.of_functions({"x": ("fp", lambda: 1)})
    assert work.mark_saved() and not work.mark_saved() and not work.mark_saved()
    assert Work.of_functions({"x": ("fp", lambda: 1)}).mark_saved(), "another work: not saved yet"
    training = Deferred("fp", lambda: "trained")
    assert training() == "trained" and training.mark_saved() and not training.mark_saved()
    assert not Deferred("fp", dict).force


def test_a_stored_partition_loads_when_called():
    stored = Stored("fp", lambda: {"a": 1}, record={"seconds": 2.0})
    assert stored() == stored.load() == {"a": 1} and stored.fingerprint == "fp" and stored.record["seconds"] == 2.0
    assert stored == Stored("fp", stored.load), "the record is not part of what a stored partition is"
