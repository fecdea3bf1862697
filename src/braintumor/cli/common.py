"""What every command module shares: how a subcommand is declared, the flags whose defaults are environment
variables (read when a command runs), and the progress bar.

A subcommand is its handler: :func:`command` takes the one-line help from the first paragraph of the handler's
docstring and the description from the rest, so what a command does is written once, next to its code.

Why environment defaults are read in the handler and not as argparse defaults: a default is evaluated while the
parser is built, so a bad ``BRAINTUMOR_PORT=abc`` broke every command, ``--version`` included, with a traceback.
Read by :meth:`EnvFlag.value`, it is one line naming the variable, for the command that uses it.

Example:
    >>> import os
    >>> os.environ["BRAINTUMOR_EXAMPLE_PORT"] = "abc"
    >>> EnvFlag("BRAINTUMOR_EXAMPLE_PORT", 8000, "port").value(None)
    Traceback (most recent call last):
    ...
    braintumor.errors.BrainTumorError: BRAINTUMOR_EXAMPLE_PORT must be a whole number, not 'abc'
    >>> EnvFlag("BRAINTUMOR_EXAMPLE_PORT", 8000, "port").value(9000)
    9000
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from braintumor.errors import BrainTumorError

if TYPE_CHECKING:
    from braintumor.training.config import TrainConfig

Handler = Callable[[argparse.Namespace], int]
T = TypeVar("T", str, int, Path)


def command(sub: Any, name: str, handler: Handler) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` run by ``handler``: the first paragraph of the handler's docstring is its help
    (in ``braintumor --help``), the rest its description (in ``braintumor NAME --help``)."""
    head, _, rest = (inspect.getdoc(handler) or "").partition("\n\n")
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=" ".join(head.split()).replace("%", "%%"), description=" ".join(rest.split()) or None
    )
    parser.set_defaults(func=handler)
    return parser


def group(sub: Any, name: str, summary: str, description: str | None = None) -> Any:
    """Add a command group (``data``, ``weights``, ``admin``) and return where its subcommands go."""
    parser = sub.add_parser(name, help=summary, description=description)
    return parser.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND", required=True)


@dataclass(frozen=True)
class EnvFlag(Generic[T]):
    """A setting a flag gives, else the environment variable ``env``, else ``default``; ``what`` names it."""

    env: str
    default: T
    what: str
    note: str = ""

    def add_to(self, parser: argparse.ArgumentParser, flag: str) -> None:
        """Declare ``flag`` (unset by default, so that :meth:`value` can tell it was not given)."""
        shown = f"./{self.default}" if isinstance(self.default, Path) else self.default
        note = f": {self.note}" if self.note else ""
        help_ = f"{self.what} ({self.env}; default {shown}{note})"
        parser.add_argument(flag, type=type(self.default), default=None, help=help_)

    def value(self, given: T | None) -> T:
        """The flag's value when given, else ``$env`` when set and not empty, else the default; a value of the
        wrong kind is a one-line error naming the variable."""
        if given is not None and given != "":
            return given
        raw = os.environ.get(self.env)
        if not raw:
            return self.default
        if not isinstance(self.default, int):
            return type(self.default)(raw)
        try:
            return int(raw)
        except ValueError:
            raise BrainTumorError(f"{self.env} must be a whole number, not {raw!r}") from None


HOST = EnvFlag("BRAINTUMOR_HOST", "127.0.0.1", "address to bind", "this machine only")
PORT = EnvFlag("BRAINTUMOR_PORT", 8000, "the API's port")
UI_HOST = EnvFlag("BRAINTUMOR_UI_HOST", "127.0.0.1", "address to bind", "this machine only")
UI_PORT = EnvFlag("BRAINTUMOR_UI_PORT", 8501, "the UI's port")
DATA_DIR = EnvFlag("BRAINTUMOR_DATA_DIR", Path("data"), "data directory")


def add_model_flag(parser: argparse.ArgumentParser, what: str = "model folder") -> None:
    """``--model``: an exported model or ensemble folder; without it, BRAINTUMOR_MODEL_DIR or the bundled model."""
    parser.add_argument("--model", type=Path, default=None, help=f"{what} (default: BRAINTUMOR_MODEL_DIR or bundled)")


def add_recipe_options(parser: argparse.ArgumentParser, *, arch_help: str, config_help: str) -> None:
    """The flags that pick a training recipe, for ``train`` and ``evaluate --cv``: read by :func:`recipe_from_args`."""
    parser.add_argument("--arch", help=arch_help)
    parser.add_argument("--config", type=Path, help=config_help)
    parser.add_argument("--task", choices=("auto", "binary", "multiclass"))
    parser.add_argument("--no-pretrained", action="store_true", help="random init (pretrained is the default)")
    parser.add_argument("--no-fine-tune", action="store_true", help="skip phase 2 (unfreezing the top of the backbone)")


def recipe_from_args(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    """The training config: the defaults, then ``--config``, then the recipe flags and ``overrides`` (``None``
    leaves a value as it is)."""
    from braintumor.training.config import TrainConfig, load_config

    cfg = load_config(args.config) if args.config else TrainConfig()
    flags = {
        "arch": args.arch,
        "task": args.task,
        "pretrained": False if args.no_pretrained else None,
        "fine_tune": False if args.no_fine_tune else None,
    }
    return cfg.merged({**flags, **overrides})


def progress(total: int, desc: str) -> Any:
    """A tqdm bar on stderr, shown only in a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not sys.stderr.isatty())
