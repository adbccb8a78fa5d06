"""Project commands added to ``kedro`` (Kedro loads ``<package>.cli`` automatically).

``kedro prune``: cached work that the last run of each stage does not use (other episodes,
settings, data or environments) is kept on disk so that going back costs nothing. This command
lists it, and removes it with ``--yes``.

``kedro verify``: every finished partition checked file by file against its completion marker
(a run checks sizes on its own; this checks contents too).
"""

from __future__ import annotations

from pathlib import Path

import click


def _size(n_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return ""


@click.group(name="tint_distill")
def cli() -> None:
    """Commands of the tint_distill project."""


@cli.command()
@click.option("--env", "-e", default=None, help="Kedro environment whose catalog names the outputs (default: local).")
@click.option("--yes", is_flag=True, help="Remove what is listed; without it, nothing is removed.")
@click.option("--show", default=20, show_default=True, help="How many paths to list per dataset.")
def prune(env: str | None, yes: bool, show: int) -> None:
    """List (or with --yes remove) cached partitions the last run of each stage does not use.

    What is kept, per resumable dataset: the partitions of its last complete run (its
    _current.json) and the finished ones of a later run that did not complete (_pending.json).
    Everything else under its folder goes: versions made with other settings, episodes, data or
    environments, unfinished versions and staging leftovers. A dataset whose _current.json is
    missing or unreadable is left as it is.
    """
    from kedro.io import DatasetError

    project = Path.cwd()
    stores = _resumable_stores(project, env)
    lock = _run_lock(project)
    if yes and not lock.try_acquire({"pipelines": ["kedro prune"], "env": env}):
        raise click.ClickException(f"a `kedro run` is working in this project ({lock.holder()}); prune when it is done.")
    try:
        total = 0
        for name, dataset in stores.items():
            try:
                entries = dataset.prune(dry_run=not yes)
            except DatasetError as error:
                click.echo(f"{name}: nothing removed: {error}")
                continue
            size = sum(n for _, n in entries)
            total += size
            click.echo(f"{name}: keeps {len(dataset.in_use())} partitions (its last complete run, and a later "
                       "one that has not completed); "
                       f"{'removed' if yes else 'would remove'} {len(entries)} entries ({_size(size)})")
            for path, n_bytes in entries[:show]:
                click.echo(f"  {_relative(path, project)}  ({_size(n_bytes)})")
            if len(entries) > show:
                click.echo(f"  ... and {len(entries) - show} more")
        click.echo(f"{'Removed' if yes else 'Would remove'} {_size(total)} in all."
                   + ("" if yes else " Nothing was removed: run `kedro prune --yes` to remove it."))
    finally:
        lock.release()


@cli.command()
@click.option("--env", "-e", default=None, help="Kedro environment whose catalog names the outputs (default: local).")
@click.option("--repair", is_flag=True, help="Mark damaged partitions unfinished, so that the next run recomputes them.")
def verify(env: str | None, repair: bool) -> None:
    """Check every finished partition of the last run of each stage, file by file (sizes and SHA-256),
    against what its completion marker recorded. Exits with status 1 when one is damaged."""
    from kedro.io import DatasetError

    project = Path.cwd()
    stores = _resumable_stores(project, env)
    lock = _run_lock(project)
    if repair and not lock.try_acquire({"pipelines": ["kedro verify --repair"], "env": env}):
        raise click.ClickException(f"a `kedro run` is working in this project ({lock.holder()}); verify when it is done.")
    damaged = 0
    try:
        for name, dataset in stores.items():
            try:
                report = dataset.verify(repair=repair)
            except DatasetError as error:
                damaged += 1
                click.echo(f"{name}: cannot be checked: {error}")
                continue
            damaged += len(report["damaged"])
            unrecorded = f" ({report['unrecorded']} saved before markers recorded their files: checked by loading)" \
                if report["unrecorded"] else ""
            click.echo(f"{name}: {report['checked']} finished partitions, {len(report['damaged'])} damaged{unrecorded}")
            for key, damage in report["damaged"]:
                click.echo(f"  {key}: {damage}")
    finally:
        lock.release()
    if damaged:
        raise click.ClickException(
            f"{damaged} damaged partition(s). " + ("They are marked unfinished: the next `kedro run` recomputes them."
                                                   if repair else "`kedro verify --repair` marks them unfinished, so "
                                                   "that the next `kedro run` recomputes them."))
    click.echo("Every finished partition holds what was saved.")


def _resumable_stores(project: Path, env: str | None) -> dict:
    """The project's resumable partitioned datasets by catalog name (no Kedro session: no run, no MLflow)."""
    from kedro.framework.project import settings
    from kedro.framework.startup import bootstrap_project

    from tint_distill.datasets import ResumablePartitionedDataset

    bootstrap_project(project)
    config = settings.CONFIG_LOADER_CLASS(
        conf_source=str(project / settings.CONF_SOURCE), env=env, **settings.CONFIG_LOADER_ARGS
    )
    catalog = settings.DATA_CATALOG_CLASS.from_config(config["catalog"])
    datasets = {name: catalog.get(name) for name in sorted(catalog.keys())}
    return {name: dataset for name, dataset in datasets.items() if isinstance(dataset, ResumablePartitionedDataset)}


def _run_lock(project: Path):
    from tint_distill.hooks import RUN_LOCK
    from tint_distill.locks import FolderLock

    return FolderLock(project / RUN_LOCK)


def _relative(path: str, project: Path) -> str:
    try:
        return Path(path).relative_to(project).as_posix()
    except ValueError:
        return path


@cli.command(name="example-task")
@click.option("--source", type=click.Choice(["drawings", "fashion-mnist"]), default="drawings", show_default=True,
              help="drawings: the embedded clip-art drawings; fashion-mnist: small grayscale product photos "
                   "(Debian package dataset-fashion-mnist), a domain the shipped generator never saw.")
@click.option("--classes", default=None,
              help="Comma-separated classes [drawings: fish,fruit,vehicle,clock; "
                   "fashion-mnist: t_shirt,trouser,pullover,dress,coat].")
@click.option("--images", default=5, show_default=True, help="Labelled images per class.")
@click.option("--test", "test_images", default=None, type=int,
              help="Test images per class (under test/) [drawings: 5; fashion-mnist: 40].")
@click.option("--unlabeled", "unlabeled_images", default=None, type=int,
              help="Unlabeled images per class (under unlabeled/, without their class) [drawings: 0; "
                   "fashion-mnist: 60].")
@click.option("--base", "base_images", default=0, show_default=True,
              help="fashion-mnist only: labelled images of every other class under base/<class>/ (other classes "
                   "of the same domain).")
@click.option("--predict", "predict_images", default=5, show_default=True,
              help="Unlabeled images per class for the predict pipeline.")
@click.option("--out", default="data/01_raw/task", show_default=True, help="The task folder to create.")
@click.option("--predict-out", default="data/01_raw/predict", show_default=True,
              help="The folder of images to classify to create.")
@click.option("--fashion-mnist-dir", default=None,
              help="The folder of Fashion-MNIST's four IDX .gz files [/usr/share/datasets/fashion-mnist].")
@click.option("--seed", default=0, show_default=True)
def example_task(source: str, classes: str | None, images: int, test_images: int | None,
                 unlabeled_images: int | None, base_images: int, predict_images: int, out: str, predict_out: str,
                 fashion_mnist_dir: str | None, seed: int) -> None:
    """Build a small task folder (and a folder to classify) to try the `task` and `predict`
    pipelines on: from the embedded drawings, or from Fashion-MNIST's grayscale product photos."""
    from tint_distill.data import fashion_mnist
    from tint_distill.data.sources import DataLayoutError
    from tint_distill.data.task import build_example_task

    drawings = source == "drawings"
    names = (classes or ("fish,fruit,vehicle,clock" if drawings else ",".join(fashion_mnist.DEFAULT_TASK_CLASSES)))
    test_images = test_images if test_images is not None else (5 if drawings else 40)
    unlabeled_images = unlabeled_images if unlabeled_images is not None else (0 if drawings else 60)
    predict_folder = Path(predict_out) if predict_images else None
    try:
        if drawings:
            if base_images:
                raise ValueError("--base: only with --source fashion-mnist.")
            copied = build_example_task(Path("data/01_raw/openclipart"), Path(out), names.split(","), images,
                                        test_images, predict_folder, predict_images, seed, unlabeled_images)
        else:
            copied = fashion_mnist.build_fashion_mnist_task(
                Path(fashion_mnist_dir) if fashion_mnist_dir else fashion_mnist.FASHION_MNIST_DIR, Path(out),
                names.split(","), images, test_images, unlabeled_images, base_images, predict_folder,
                predict_images, seed)
    except (FileExistsError, ValueError, DataLayoutError) as error:
        raise click.ClickException(str(error)) from error
    base = f", {copied['base']} base-class images under base/" if copied.get("base") else ""
    click.echo(f"{out}: {copied['labelled']} labelled, {copied['test']} test and {copied['unlabeled']} unlabeled "
               f"images of {names}{base}; "
               f"{predict_out}: {copied['predict']} images to classify.")
