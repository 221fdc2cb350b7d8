"""The `digits` command group: one subcommand per pipeline stage, plus serving's commands.

It lives in the torch-free core so a serving-only install (`pip install digits`) has a working
`digits serve` and `digits score`; a pipeline command there says which extra it needs.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

import click

from digits import __version__
from digits.errors import DataError, NotOwnedError

# name -> "module:attribute"; imported only when used, so `digits score` never loads torch.
COMMANDS = {
    "fetch": "pipeline.stages.fetch:fetch",
    "prepare": "pipeline.stages.prepare:prepare_command",
    "gradcheck": "pipeline.tools.gradcheck:gradcheck_command",
    "lr-find": "pipeline.tools.lr_find:lr_find_command",
    "ensemble": "pipeline.tools.ensemble:ensemble_command",
    "fingerprint": "pipeline.tools.fingerprint:fingerprint_command",
    "search": "pipeline.tools.search:search_command",
    "study": "pipeline.tools.study:study_command",
    "train": "pipeline.stages.train:train_command",
    "compress": "pipeline.stages.compress:compress_command",
    "evaluate": "pipeline.stages.evaluate:evaluate_command",
    "learning-curve": "pipeline.stages.learning_curve:learning_curve_command",
    "report": "pipeline.stages.report:report_command",
    "export": "pipeline.stages.export:export_command",
    "robustness": "pipeline.stages.robustness:robustness_command",
    "score": "serving.scoring.command:score",
    "serve": "serving.service.serve:serve",
    "verify": "serving.verify:verify",
}

# Top-level modules that only the `pipeline` extra installs.
PIPELINE_EXTRA = {"torch", "onnx", "onnxscript", "dvc", "dvclive", "matplotlib"}


def missing_extra(name: str) -> click.Command:
    """A stand-in for a pipeline command in a serving-only install: listed, and failing clearly."""

    def refuse() -> None:
        raise click.UsageError(
            f"`digits {name}` needs the pipeline extra: pip install 'digits[pipeline]'"
        )

    return click.Command(
        name,
        callback=refuse,
        help="Not installed: needs the pipeline extra.",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


def params_file(args: list[str]) -> Path:
    """The `--params` file a pipeline command was given (params.yaml when none)."""
    for i, arg in enumerate(args):
        if arg == "--params" and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--params="):
            return Path(arg.partition("=")[2])
    return Path("params.yaml")


def enter_portable(params: Path) -> None:
    """Portable mode's kernel settings (pipeline.portable), where the pipeline is installed;
    loaded by name, as the commands are: the core never imports the pipeline."""
    try:
        portable = import_module("pipeline.portable")
    except ModuleNotFoundError:  # a serving-only install: the command will say what is missing
        return
    portable.enter(params)


class LazyGroup(click.Group):
    """Imports subcommands on demand and turns data-file errors into one-line messages."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        try:
            return getattr(import_module(module), attr)
        except ModuleNotFoundError as err:
            if not module.startswith("pipeline.") or err.name not in PIPELINE_EXTRA:
                raise
            return missing_extra(name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and COMMANDS.get(args[0], "").startswith("pipeline."):
            enter_portable(params_file(args[1:]))  # before the command's module loads torch
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (DataError, NotOwnedError, OSError) as err:
            raise click.ClickException(str(err)) from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="digits")
def cli() -> None:
    """digits: a reproducible MNIST train-to-serve pipeline.

    Stages, in the order `dvc repro` runs them: fetch, prepare, train, compress,
    evaluate, export, robustness, report. Experiments: search, study. Serving: serve, score,
    verify.
    """


main = cli
