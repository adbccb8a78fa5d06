"""Project pipelines, one folder each under ``pipelines/``.

- ``generator_pretraining``: trains the offline default diffusion model on the base classes
  (cached: only when its data or settings change) and measures its quality;
- ``data_episodes`` -> ``inversion`` -> ``synthesis``: episodes, TINT specialisations,
  synthetic images;
- ``distillation`` -> ``evaluation``: teacher soft labels, a student per (method, episode),
  accuracies with confidence intervals, comparisons, speed;
- ``tint``: ``data_episodes`` + ``inversion`` + ``synthesis``;
- ``experiment``: everything after the generator, with whatever generator the catalog names
  (the offline default, or your Stable Diffusion folder in the ``gpu`` environment);
- ``__default__``: ``generator_pretraining`` and ``experiment``.

Registered explicitly rather than with ``find_pipelines``, which in Kedro 1.7 loads only the
pipelines named on the command line and so cannot build the composite ones.
"""

from kedro.pipeline import Pipeline

from tint_distill.pipelines import (
    data_episodes,
    distillation,
    evaluation,
    generator_pretraining,
    inversion,
    synthesis,
)


def register_pipelines() -> dict[str, Pipeline]:
    index = data_episodes.create_pipeline().only_nodes("build_image_index")  # what pre-training reads
    pipelines = {
        "generator_pretraining": index + generator_pretraining.create_pipeline(),
        "data_episodes": data_episodes.create_pipeline(),
        "inversion": inversion.create_pipeline(),
        "synthesis": synthesis.create_pipeline(),
        "distillation": distillation.create_pipeline(),
        "evaluation": evaluation.create_pipeline(),
    }
    pipelines["tint"] = pipelines["data_episodes"] + pipelines["inversion"] + pipelines["synthesis"]
    pipelines["experiment"] = pipelines["tint"] + pipelines["distillation"] + pipelines["evaluation"]
    pipelines["__default__"] = pipelines["generator_pretraining"] + pipelines["experiment"]
    return pipelines
