"""``inversion``: TINT specialisation (textual + null-text inversion) of each (episode, class)."""

from kedro.pipeline import Node, Pipeline

from tint_distill.pipelines.inversion import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.specialise_classes,
                inputs=["generator", "raw_images", "episodes", "params:inversion", "params:execution"],
                outputs="class_specialisations",
                name="specialise_classes",
            ),
            Node(
                nodes.summarise_reconstructions,
                inputs="class_specialisations",
                outputs=["inversion_report", "inversion_metrics"],
                name="summarise_reconstructions",
            ),
        ]
    )
