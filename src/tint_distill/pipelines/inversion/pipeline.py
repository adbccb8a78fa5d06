"""``inversion``: TINT specialisation (textual + null-text inversion) of each (episode, class)."""

from kedro.pipeline import Node, Pipeline

from tint_distill.pipelines.inversion import nodes


def create_pipeline(settings: str = "params:inversion", **kwargs) -> Pipeline:
    """``settings``: where the inversion settings come from (the ``task`` pipeline's own words for its
    domain generator: a dataset its ``choose_generator`` node gives)."""
    return Pipeline(
        [
            Node(
                nodes.specialise_classes,
                inputs=["generator", "raw_images", "episodes", settings, "params:execution"],
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
