"""``synthesis``: synthetic images from each class specialisation, and grids to look at."""

from kedro.pipeline import Node, Pipeline

from tint_distill.pipelines.synthesis import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.generate_synthetic_images,
                inputs=["generator", "class_specialisations", "params:synthesis", "params:execution"],
                outputs="synthetic_images",
                name="generate_synthetic_images",
            ),
            Node(
                nodes.draw_synthesis_previews,
                inputs=[
                    "raw_images",
                    "episodes",
                    "synthetic_images",
                    "params:synthesis_preview.n_episodes",
                    "params:synthesis_preview.n_images",
                    "params:synthesis_preview.cell_size",
                ],
                outputs=["synthesis_previews", "synthesis_preview"],
                name="draw_synthesis_previews",
            ),
        ]
    )
