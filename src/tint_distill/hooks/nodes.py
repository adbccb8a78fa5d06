"""What a node's run looks like from outside: its clock includes the work it plans, and its typed
settings are logged to MLflow one parameter per leaf."""

from __future__ import annotations

from typing import Any

from kedro.framework.hooks import hook_impl

from tint_distill.params import as_plain
from tint_distill.work import Deferred, Work


class NodeClock:
    """An expensive node returns the work it plans (:class:`~tint_distill.work.Work`, or a model's
    training, :class:`~tint_distill.work.Deferred`); the dataset that saves it does the work. Kedro
    saves outputs after Kedro-Viz and the logs have stopped the node's clock, so this hook saves such
    outputs at the end of the node instead: each node shows the time its work takes. The work
    remembers it was saved, so Kedro's own save that follows does nothing."""

    @hook_impl(tryfirst=True)  # before Kedro-Viz's hook reads the node's duration
    def after_node_run(self, node: Any, catalog: Any, outputs: dict) -> None:
        for name, value in outputs.items():
            if isinstance(value, (Work, Deferred)) and name in catalog:
                catalog.save(name, value)


class PlainParameters:
    """Kedro gives a node its parameter blocks as typed settings (dataclasses, tuples); kedro-mlflow
    logs a node's parameters one per leaf only when they are mappings, and refuses a value logged
    twice in two spellings (``['tint']``, ``('tint',)``). This hook, run before kedro-mlflow's, shows
    the hooks after it every parameter as YAML would (mappings and lists); the node still gets the
    typed settings (Kedro gives hooks a copy of the inputs)."""

    @hook_impl(tryfirst=True)
    def before_node_run(self, inputs: dict[str, Any]) -> None:
        for name, value in inputs.items():
            if name.startswith("params:"):
                inputs[name] = as_plain(value)
