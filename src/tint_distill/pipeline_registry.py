"""Project pipelines, one folder each under ``pipelines/``.

- ``generator``: builds the offline default diffusion model;
- ``data_episodes`` -> ``inversion`` -> ``synthesis``: episodes, TINT specialisations,
  synthetic images;
- ``distillation`` -> ``evaluation``: teacher soft labels, a student per (method, episode),
  accuracies with confidence intervals, comparisons, speed;
- ``tint``: ``data_episodes`` + ``inversion`` + ``synthesis``;
- ``experiment``: everything after the generator, with whatever generator the catalog names
  (the offline default, or your Stable Diffusion folder in the ``gpu`` environment);
- ``__default__``: ``generator`` followed by ``experiment``.

Registered explicitly rather than with ``find_pipelines``, which in Kedro 1.7 loads only the
pipelines named on the command line and so cannot build the composite ones.
"""

from kedro.pipeline import Pipeline

from tint_distill.pipelines import data_episodes, distillation, evaluation, generator, inversion, synthesis


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = {
        "generator": generator.create_pipeline(),
        "data_episodes": data_episodes.create_pipeline(),
        "inversion": inversion.create_pipeline(),
        "synthesis": synthesis.create_pipeline(),
        "distillation": distillation.create_pipeline(),
        "evaluation": evaluation.create_pipeline(),
    }
    pipelines["tint"] = pipelines["data_episodes"] + pipelines["inversion"] + pipelines["synthesis"]
    pipelines["experiment"] = pipelines["tint"] + pipelines["distillation"] + pipelines["evaluation"]
    pipelines["__default__"] = pipelines["generator"] + pipelines["experiment"]
    return pipelines
