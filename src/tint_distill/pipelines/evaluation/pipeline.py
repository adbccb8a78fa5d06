"""``evaluation``: accuracy per method with CIs, paired comparisons, planner and its cost plan, speed, plots."""

from kedro.pipeline import Node, Pipeline

from tint_distill.pipelines.evaluation import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.collect_episode_accuracies,
                inputs=["student_results", "teacher_outputs"],
                outputs="episode_accuracies",
                name="collect_episode_accuracies",
            ),
            Node(
                nodes.measure_speed,
                inputs=["params:teacher", "params:student", "params:distillation", "params:data_episodes.sampling.n_way", "params:speed"],
                outputs="speed_report",
                name="measure_speed",
            ),
            Node(
                nodes.collect_unit_costs,
                inputs=["class_specialisations", "synthetic_images", "teacher_outputs", "student_results"],
                outputs="unit_costs",
                name="collect_unit_costs",
            ),
            Node(
                nodes.summarise,
                inputs=["episode_accuracies", "speed_report", "unit_costs", "params:evaluation.comparisons",
                        "params:evaluation.planner", "inversion_report", "student_results"],
                outputs="evaluation_summary",
                name="summarise_evaluation",
            ),
            Node(
                nodes.package_logged_student,
                inputs=["episode_accuracies", "student_results", "episodes", "raw_images",
                        "params:evaluation.logged_model"],
                outputs="logged_student_model",
                name="log_student_model",
            ),
            Node(
                nodes.results_table,
                inputs=["evaluation_summary", "params:data_source", "params:data_episodes.sampling.n_way",
                        "params:data_episodes.sampling.n_shot"],
                outputs="results_table",
                name="write_results_table",
            ),
            Node(nodes.plot_accuracy, inputs="evaluation_summary", outputs="accuracy_plot", name="plot_accuracy"),
            Node(nodes.plot_speed_accuracy, inputs="evaluation_summary", outputs="speed_accuracy_plot", name="plot_speed_accuracy"),
            Node(nodes.plot_cost_plan, inputs="evaluation_summary", outputs="cost_plan_plot", name="plot_cost_plan"),
            Node(
                nodes.mlflow_metrics,
                inputs=["evaluation_summary", "student_results", "params:evaluation.log_episode_loss_curves"],
                outputs="evaluation_metrics",
                name="log_evaluation_metrics",
            ),
        ]
    )
