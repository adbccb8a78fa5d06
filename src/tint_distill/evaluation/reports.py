"""What people read: one line per accuracy estimate, the task's model card (Markdown and JSON),
and the experiment's plots (matplotlib ``Figure`` objects, no pyplot: no global backend or
figure registry to touch)."""

from __future__ import annotations

import textwrap
from datetime import datetime, timezone

from matplotlib.figure import Figure

from tint_distill.params import as_plain


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _label(name: str, export: str) -> str:
    from tint_distill.evaluation.baselines import DESCRIPTIONS, FEATURE_BASELINES

    if name == "teacher":
        return "teacher (prototypes, for reference)"
    if name in FEATURE_BASELINES:
        return DESCRIPTIONS[name]
    return f"{name} student" + (" (baseline)" if name == "supports_only" and name != export else "")


def accuracy_lines(estimate: dict) -> list[str]:
    """One readable line per estimate, the exported student first, then the baselines, the teacher
    last: ``tint student: 85.0% [64.0%, 94.8%] on 20 held-out images (3 folds)``."""
    from tint_distill.evaluation.baselines import VERDICT_BASELINES

    lines = []
    for part, where in (("leave_out", "held-out images ({splits} folds)"), ("test", "test images")):
        if not estimate.get(part):
            continue
        methods = estimate[part]["methods"]
        order = [estimate["export"], *VERDICT_BASELINES]
        for name in sorted(methods, key=lambda n: (n == "teacher", order.index(n) if n in order else len(order), n)):
            stats = methods[name]
            lines.append(f"{_label(name, estimate['export'])}: {_pct(stats['accuracy'])} [{_pct(stats['low'])}, "
                         f"{_pct(stats['high'])}] on {stats['predictions']} "
                         f"{where.format(splits=estimate[part].get('splits'))}")
    return lines or ["no estimate: every class has one labelled image and there is no test folder"]


def comparison_lines(estimate: dict) -> list[str]:
    """The exported student minus each baseline (and the teacher), paired per image, per part:
    ``tint − nn_raw_pixels (nearest neighbour on raw pixels; test, paired per image): +8.0 points [+2.1, +13.9]``."""
    from tint_distill.evaluation.baselines import DESCRIPTIONS

    lines = []
    for part in ("leave_out", "test"):
        for name, comparison in (estimate[part] or {}).get("comparisons", {}).items():
            bounds = comparison["ci95"]
            interval = f" [{100 * bounds[0]:+.1f}, {100 * bounds[1]:+.1f}]" if bounds else ""
            other = name.split("_vs_", 1)[1]
            about = f"{DESCRIPTIONS[other]}; " if other in DESCRIPTIONS else ""
            where = "k-fold" if part == "leave_out" else part
            lines.append(f"{name.replace('_vs_', ' − ')} ({about}{where}, paired per image): "
                         f"{100 * comparison['mean_diff']:+.1f} points{interval}")
    return lines


def model_card(report: dict, estimate: dict, speed: dict, result: dict, classes: list[str], parameters: int,
               export: str, settings: dict, generator: dict | None = None, registration: str = "") -> dict:
    """The task's model card as JSON: the verdict (does the student beat the baselines) and what
    the Model Registry got (``registration``), the final student ``result`` (its record), the task
    ``report``, the accuracy ``estimate``, its CPU ``speed`` and the parameter blocks
    (``settings``: block name -> block, written as in YAML)."""
    from tint_distill.distill.distillation import STUDENT_MEAN, STUDENT_STD
    from tint_distill.distill.export import INPUT_POLICY, ONNX_OPSET

    real_unlabeled = report["unlabeled_images"] if export != "supports_only" else 0
    return {
        "verdict": estimate["verdict"]["line"],
        "registration": registration,
        "model": f"{result['student']} student distilled with {export}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "classes": classes,
        "input": {"image_size": result["image_size"], "policy": INPUT_POLICY, "normalisation": "inside the model",
                  "mean": list(STUDENT_MEAN), "std": list(STUDENT_STD), "onnx_input": "images [batch, 3, S, S]",
                  "onnx_outputs": ["logits [batch, classes]", "probabilities [batch, classes]"], "opset": ONNX_OPSET},
        "accuracy": estimate,
        "parameters": parameters,
        "speed_cpu": speed,
        "training": {
            "supports_per_class": report["images_per_class"],
            "synthetic_images": int(result["n_unlabeled"]) - real_unlabeled,
            "synthetic_images_generated": result.get("n_generated"),  # more when synthesis.filter oversamples
            "unlabeled_real_images": real_unlabeled,
            "teacher_agreement_on_synthetic": result.get("teacher_agreement_on_unlabeled"),
            "epochs": len(result["history"]),
            "settings": {name: as_plain(block) for name, block in settings.items()},
        },
        "generator": generator,
    }


def model_card_markdown(card: dict) -> str:
    """The model card for people (the MLflow registered version's description, ``model_card.md``)."""
    speed, training, source = card["speed_cpu"], card["training"], card["input"]
    supports = ", ".join(f"{name} {n}" for name, n in training["supports_per_class"].items())
    lines = [
        f"**{card['verdict']}**",
        "",
        *([card["registration"], ""] if card.get("registration") else []),
        f"# Model card: {card['model']}",
        "",
        f"Created {card['created']} by `kedro run --pipelines task` (tint_distill).",
        "",
        "## Classes",
        "",
        *[f"{label}. {name}" for label, name in enumerate(card["classes"])],
        "",
        "## Input",
        "",
        f"- {source['policy']} (image_size = {source['image_size']}).",
        f"- Normalisation (mean {source['mean']}, std {source['std']}) is inside the model.",
        f"- ONNX (opset {source['opset']}): input `{source['onnx_input']}`, outputs "
        + ", ".join(f"`{o}`" for o in source["onnx_outputs"]) + "; any batch size.",
        "",
        "## Accuracy",
        "",
        *[f"- {line}" for line in accuracy_lines(card["accuracy"])],
        "",
        "Compared with what you would try first, on the same images (the exported method minus each):",
        "",
        *[f"- {line}" for line in comparison_lines(card["accuracy"])],
    ]
    held_out = card["accuracy"]["leave_out"]
    if held_out:
        lines += ["", f"The k-fold estimate: {held_out['held_out_images']} held-out images over {held_out['splits']} "
                      f"folds; the exported method's interval is {100 * held_out['width']:.1f} points wide. "
                      f"95% intervals of accuracies: Wilson; of differences: t-intervals. {held_out['note']}"]
    lines += [
        "",
        "## Size and speed (CPU, ONNX Runtime)",
        "",
        f"- {card['parameters'] / 1e6:.2f} M parameters.",
        f"- Latency at batch 1: {speed['latency_ms_batch_1']:.2f} ms; throughput at batch 64: "
        f"{speed['images_per_s_batch_64']:.0f} images/s ({speed['threads']} threads).",
        "",
        "## How it was trained",
        "",
        f"- Labelled images per class (all used as supports): {supports}.",
        f"- {training['synthetic_images']} synthetic images, labelled by the teacher "
        f"(teacher {training['settings']['teacher'].get('backbone')}); the teacher's label matched the intended class "
        f"for {_pct(training['teacher_agreement_on_synthetic'])} of them."
        + (f" They are those the filter kept of {training['synthetic_images_generated']} generated "
           "(`synthesis.filter`)." if training.get("synthetic_images_generated") not in (None, training["synthetic_images"])
           else ""),
        *([f"- {training['unlabeled_real_images']} unlabeled real images (`unlabeled/`), labelled by the teacher too."]
          if training["unlabeled_real_images"] else []),
        f"- {training['epochs']} epochs of distillation (KD on the synthetic images + cross-entropy on the supports).",
        "- All settings are in the JSON card (`training.settings`) and in the MLflow run.",
        "",
        *generator_lines(card.get("generator")),
    ]
    return "\n".join(lines)


def generator_lines(generator: dict | None) -> list[str]:
    """The card's generator section: which generator drew the synthetic images, and what to add when
    it was not trained on the user's domain."""
    if not generator:
        return []
    lines = ["## Generator", "", f"- The synthetic images come from {generator['summary']}."]
    if generator.get("advice"):
        lines.append(f"- To do better: {generator['advice']}.")
    return lines + [""]


def plot_accuracy(summary: dict) -> Figure:
    """Accuracy per method with its 95% confidence interval."""
    names = list(summary["methods"])
    means = [summary["methods"][m]["accuracy"] for m in names]
    errors = [summary["methods"][m]["ci95"] for m in names]
    figure = Figure(figsize=(7, 3.5), layout="constrained")
    axis = figure.subplots()
    axis.errorbar(range(len(names)), means, yerr=errors, fmt="o", capsize=5)
    axis.set_xticks(range(len(names)), names, rotation=20)
    if names:
        axis.axhline(1 / summary["methods"][names[0]]["n_way"], color="grey", linestyle="--", label="chance")
        axis.legend(loc="lower right")
    episodes = {summary["methods"][m]["n_episodes"] for m in names}
    axis.set_ylabel("query accuracy")
    axis.set_title(f"Accuracy per method, mean and 95% CI over {', '.join(map(str, sorted(episodes)))} episodes")
    axis.grid(alpha=0.3)
    return figure


def plot_speed_accuracy(summary: dict) -> Figure:
    """Teacher and students: accuracy against CPU throughput (images/s, log scale)."""
    speed = summary["speed"]
    figure = Figure(figsize=(6, 4), layout="constrained")
    axis = figure.subplots()
    for position, (method, stats) in enumerate(summary["methods"].items()):
        role = "teacher" if method == "teacher" else "student"
        x = speed[role]["images_per_s"] * (1 + 0.04 * position)  # students share one speed: spread them
        axis.errorbar([x], [stats["accuracy"]], yerr=[stats["ci95"]], fmt="s" if role == "teacher" else "o",
                      capsize=4, label=method)
    axis.legend(fontsize=8, loc="best")
    axis.set_xscale("log")
    axis.set_xlabel("CPU images/s (log)")
    axis.set_ylabel("query accuracy")
    axis.set_title(
        f"teacher {speed['teacher']['parameters'] / 1e6:.2f} M params, "
        f"student {speed['student']['parameters'] / 1e6:.2f} M params"
    )
    axis.grid(alpha=0.3, which="both")
    return figure


def plot_cost_plan(summary: dict) -> Figure:
    """Wall hours against the CI half-width aimed for, one line per number of workers, each point
    labelled with its episodes; the measured cost per episode by stage in the title."""
    plan = summary["cost_plan"]
    figure = Figure(figsize=(7, 4), layout="constrained")
    axis = figure.subplots()
    targets = sorted(plan["targets"], key=lambda t: t["half_width"])
    if not targets:
        axis.text(0.5, 0.5, plan.get("note", "no cost plan"), ha="center", va="center", wrap=True)
        axis.set_axis_off()
        return figure
    widths = [100 * t["half_width"] for t in targets]
    for workers in plan["workers"]:
        axis.plot(widths, [t["wall_hours"][str(workers)] for t in targets], "o-", label=f"{workers} worker(s)")
    for width, target in zip(widths, targets):
        axis.annotate(f"{target['episodes']} ep.", (width, target["wall_hours"][str(plan["workers"][0])]),
                      textcoords="offset points", xytext=(4, 4), fontsize=8)
    axis.set_yscale("log")
    axis.margins(x=0.1)
    axis.set_xlabel(f"95% CI half-width of {plan['method']} accuracy (points)")
    axis.set_ylabel("wall hours (log)")
    stages = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in plan["per_episode_s"].items() if stage != "total")
    # The stages on their own lines, wrapped to the figure's width: one line of every stage was cut at the edges.
    axis.set_title(f"Cost plan: {plan['per_episode_s']['total']:.1f} device-s per episode\n"
                   + textwrap.fill(f"by stage: {stages}", width=90), fontsize=9)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3, which="both")
    return figure


# The paper's column order: the baselines, the synthetic-data methods, then the real-data ones.
TABLE_ORDER = ("supports_only", "textual_inversion", "tint", "real_unlabeled", "mined_real", "teacher")


def _cell(stats: dict) -> str:
    return f"{100 * stats['accuracy']:.1f} ± {100 * stats['ci95']:.1f}"


def results_table(summary: dict, source: str, n_way: int, n_shot: int) -> str:
    """This run as one row of the paper's table (Markdown): accuracy ± 95% CI half-width in points
    per method, the paired difference of TINT over the supports-only student, and what the
    planner says a +/-1 pt interval costs (episodes; device-hours measured on this run's devices)."""
    methods = summary["methods"]
    names = [m for m in TABLE_ORDER if m in methods] + sorted(set(methods) - set(TABLE_ORDER))
    episodes = max(stats["n_episodes"] for stats in methods.values())
    header = ["data source", "setting", "episodes", *names]
    row = [source, f"{n_way}-way {n_shot}-shot", str(episodes), *(_cell(methods[m]) for m in names)]
    diff = summary.get("comparisons", {}).get("tint_vs_supports_only")
    if diff:
        low, high = diff["ci95"]
        header.append("tint − supports_only")
        row.append(f"{100 * diff['mean_diff']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]")
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header), "| " + " | ".join(row) + " |", ""]
    lines.append("Accuracy in % over the episodes' queries, ± the 95% CI half-width; the difference is paired "
                 "per episode (95% t-interval).")
    plan = summary.get("cost_plan") or {}
    one_point = [t for t in plan.get("targets", []) if abs(t["half_width"] - 0.01) < 1e-9]
    if one_point:
        target = one_point[0]
        devices = ", ".join(sorted(plan.get("device_share", {}))) or "unknown devices"
        lines.append(f"+/-1 pt on {plan['method']} needs {target['episodes']} episodes: "
                     f"{target['device_hours']:.3g} device-hours at this run's cost per episode ({devices}).")
    return "\n".join(lines) + "\n"
