"""``data_episodes``: from a raw image source to a seeded table of few-shot episodes."""

from kedro.pipeline import Node, Pipeline

from tint_distill.pipelines.data_episodes import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.build_image_index,
                inputs=["raw_images", "params:data_episodes.class_splits"],
                outputs="image_index",
                name="build_image_index",
            ),
            Node(
                nodes.sample_episode_table,
                inputs=["image_index", "params:data_episodes.sampling"],
                outputs="episodes",
                name="sample_episodes",
            ),
            Node(
                nodes.check_images,
                inputs=[
                    "raw_images", "image_index", "episodes",
                    "params:data_episodes.image_check", "params:data_episodes.min_image_side",
                ],
                outputs="image_check_report",
                name="check_images",
            ),
            Node(
                nodes.draw_support_grids,
                inputs=["raw_images", "episodes", "params:data_episodes.grids.n_episodes", "params:data_episodes.grids.cell_size"],
                outputs="episode_support_grids",
                name="draw_support_grids",
            ),
        ]
    )
