"""The `digits` command group: one subcommand per pipeline stage, plus serving's commands."""

from __future__ import annotations

from importlib import import_module
from typing import Any

import click

from pipeline import __version__

# name -> "module:attribute"; imported only when used, so `digits score` never loads torch.
COMMANDS = {
    "fetch": "pipeline.fetch:fetch",
    "prepare": "pipeline.prepare:prepare_command",
    "gradcheck": "pipeline.gradcheck:gradcheck_command",
    "lr-find": "pipeline.lr_find:lr_find_command",
    "train": "pipeline.train:train_command",
    "compress": "pipeline.compress:compress_command",
    "evaluate": "pipeline.evaluate:evaluate_command",
    "learning-curve": "pipeline.learning_curve:learning_curve_command",
    "report": "pipeline.report:report_command",
    "export": "pipeline.export:export_command",
    "score": "serving.score:score",
    "serve": "serving.serve:serve",
}


class LazyGroup(click.Group):
    """Imports subcommands on demand and turns data-file errors into one-line messages."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(import_module(module), attr)

    def invoke(self, ctx: click.Context) -> Any:
        from pipeline.idx import IdxError

        try:
            return super().invoke(ctx)
        except (IdxError, OSError) as err:
            raise click.ClickException(str(err)) from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="digits")
def cli() -> None:
    """digits: a reproducible MNIST train-to-serve pipeline.

    Stages, in the order `dvc repro` runs them: fetch, prepare, train, compress,
    evaluate, export. Serving: serve, score.
    """


main = cli
