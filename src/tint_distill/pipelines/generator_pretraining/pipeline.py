"""``generator_pretraining``: train the offline default generator on the base classes (cached), then judge it."""

from kedro.pipeline import Node, Pipeline

from tint_distill.pipelines.generator_pretraining import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.split_pretraining_images,
                inputs=["image_index", "params:generator_pretraining"],
                outputs="pretraining_images",
                name="split_pretraining_images",
            ),
            Node(
                nodes.pretrain_domain_generator,
                inputs=["raw_images", "pretraining_images", "params:generator_pretraining"],
                outputs="generator",
                name="pretrain_generator",
            ),
            Node(
                nodes.assess_domain_generator,
                inputs=["generator", "raw_images", "pretraining_images", "params:generator_pretraining",
                        "params:teacher"],
                outputs=["generator_quality", "generator_samples", "generator_reconstructions"],
                name="assess_generator",
            ),
            Node(
                nodes.plot_pretraining_curves,
                inputs="generator",
                outputs="generator_training_curves",
                name="plot_pretraining_curves",
            ),
            Node(
                nodes.generator_metrics,
                inputs=["generator_quality", "generator"],
                outputs="generator_metrics",
                name="log_generator_metrics",
            ),
        ]
    )
