"""``synthesis``: synthetic images from each class specialisation, and grids to look at."""

from kedro.pipeline import Node, Pipeline

from tint_distill.pipelines.synthesis import nodes


def create_pipeline(only_for_methods: bool = False, **kwargs) -> Pipeline:
    """``only_for_methods``: generate only the samplers that ``params:methods`` train on (the ``task``
    pipeline); else every sampler of ``params:synthesis`` (the experiment compares them)."""
    methods = ["params:methods"] if only_for_methods else []
    return Pipeline(
        [
            Node(
                nodes.generate_synthetic_images,
                inputs=["generator", "class_specialisations", "params:synthesis", "params:execution", *methods],
                outputs="synthetic_images",
                name="generate_synthetic_images",
            ),
            Node(
                nodes.draw_synthesis_previews,
                inputs=[
                    "generator",
                    "raw_images",
                    "episodes",
                    "class_specialisations",
                    "synthetic_images",
                    "params:synthesis",
                    "params:synthesis_preview",
                ],
                outputs="synthesis_previews",
                name="draw_synthesis_previews",
            ),
        ]
    )
