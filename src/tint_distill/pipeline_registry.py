"""Project pipelines, one folder each under ``pipelines/``.

- ``generator_pretraining``: trains the offline default diffusion model on the base classes
  (cached: only when its data or settings change) and measures its quality;
- ``student_pretraining``: trains the student architecture on the base classes (cached the same
  way); every method's student starts from it (``student.init: base_classes``);
- ``data_episodes`` -> ``inversion`` -> ``synthesis``: episodes, TINT specialisations,
  synthetic images;
- ``distillation`` -> ``evaluation``: teacher soft labels, a student per (method, episode),
  accuracies with confidence intervals, comparisons, speed;
- ``tint``: ``data_episodes`` + ``inversion`` + ``synthesis``;
- ``experiment``: everything after the generator, with whatever generator the catalog names (the
  data source's offline generator, or your Stable Diffusion folder in the ``gpu`` environment),
  including ``student_pretraining``: the data source's base student is trained, or reused while
  up to date (the log says which);
- ``__default__``: ``generator_pretraining`` and ``experiment``;
- ``task``: a user's own classes (``--params task_path=...``) through ``inversion``, ``synthesis``
  and ``distillation`` to an exported, measured, registered student; its datasets are ``task.*``;
- ``predict``: a folder of new images classified by the task's exported model.

Registered explicitly rather than with ``find_pipelines``, which in Kedro 1.7 loads only the
pipelines named on the command line and so cannot build the composite ones. Each stage is a
namespace (its nodes are named ``<stage>.<node>``): Kedro-Viz shows it as one box that expands.
"""

import warnings

from kedro.pipeline import Pipeline

from tint_distill.pipelines import (
    data_episodes,
    distillation,
    evaluation,
    generator_pretraining,
    inversion,
    predict,
    student_pretraining,
    synthesis,
    task,
)


def as_stage(pipeline: Pipeline, name: str) -> Pipeline:
    """The same nodes under the namespace ``name``, so that Kedro-Viz can collapse the stage into
    one box; dataset and parameter names stay as they are (nodes become ``<stage>.<node>``)."""
    parameters = {p for p in pipeline.inputs() if p.startswith("params:")}
    return Pipeline(pipeline, namespace=name, inputs=pipeline.inputs() - parameters,
                    outputs=pipeline.all_outputs(), parameters=parameters)


def register_pipelines() -> dict[str, Pipeline]:
    stages = {
        name: as_stage(module.create_pipeline(), name)
        for name, module in (
            ("generator_pretraining", generator_pretraining),
            ("student_pretraining", student_pretraining),
            ("data_episodes", data_episodes),
            ("inversion", inversion),
            ("synthesis", synthesis),
            ("distillation", distillation),
            ("evaluation", evaluation),
        )
    }
    index = stages["data_episodes"].only_nodes("data_episodes.build_image_index")  # what pre-training reads
    base_split = index + stages["generator_pretraining"].only_nodes("generator_pretraining.split_pretraining_images")
    pipelines = {**stages, "generator_pretraining": index + stages["generator_pretraining"],
                 "student_pretraining": base_split + stages["student_pretraining"]}
    pipelines["tint"] = pipelines["data_episodes"] + pipelines["inversion"] + pipelines["synthesis"]
    pipelines["experiment"] = (pipelines["student_pretraining"] + pipelines["tint"] + pipelines["distillation"]
                               + pipelines["evaluation"])
    pipelines["__default__"] = pipelines["generator_pretraining"] + pipelines["experiment"]
    pipelines["task"] = task_pipeline(stages)
    with warnings.catch_warnings():  # Kedro warns of the dot in the task's dataset name
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        pipelines["predict"] = Pipeline(as_stage(predict.create_pipeline(), "predict"),
                                        inputs={"student_onnx": "task.student_onnx"})
    return pipelines


def task_pipeline(stages: dict[str, Pipeline]) -> Pipeline:
    """The task's preparation, its generator (its own domain generator, or the experiment's), the
    experiment's TINT and distillation stages on it (synthesis only for the task's methods), and its
    delivery, all under the namespace ``task``: every dataset is ``task.<name>`` except the
    experiment's generator and the base-class student; parameters keep their names, except
    ``methods``, which is ``task.methods`` (synthesis), and the inversion settings, which
    ``choose_generator`` gives (the domain generator's words); the students trained are
    ``trained_methods`` (the task's methods and the supports-only baseline)."""
    tint = Pipeline(as_stage(inversion.create_pipeline(settings="inversion_settings"), "inversion")
                    + as_stage(synthesis.create_pipeline(only_for_methods=True), "synthesis"),
                    inputs={"generator": "generator_for_task"})
    inner = (
        as_stage(task.create_preparation(), "prepare")
        + as_stage(task.create_generator(), "generator")
        + tint
        + as_stage(distillation.create_pipeline(with_unlabeled_images=True, methods="trained_methods"),
                   "distillation")
        + as_stage(task.create_delivery(), "deliver")
    )
    parameters = {p: p for p in inner.inputs() if p.startswith("params:")}
    parameters["params:methods"] = "params:task.methods"
    with warnings.catch_warnings():  # Kedro warns of the dots that its own namespacing puts in dataset names
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        return Pipeline(inner, namespace="task", inputs={"generator", "base_student"}, parameters=parameters)
