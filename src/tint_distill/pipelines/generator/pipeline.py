"""``generator``: the default diffusion model, built offline (a user's SD folder replaces it)."""

from kedro.pipeline import Node, Pipeline

from tint_distill.pipelines.generator import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.build_untrained_generator,
                inputs=["params:generator.architecture", "params:generator.seed"],
                outputs="generator",
                name="build_untrained_generator",
            )
        ]
    )
