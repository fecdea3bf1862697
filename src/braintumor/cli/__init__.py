"""The one command-line entry point: ``braintumor <command>``, one module per command group.

Every failure the user can cause ends with a one-line reason on stderr and a non-zero exit code
(2 for bad input or usage, 1 for anything unexpected), never a traceback. Each module adds its parsers and
imports what its handlers need when they run, so ``braintumor --help`` loads neither torch nor the server.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from braintumor import __version__
from braintumor.cli import app, data, evaluate, inference, pacs, server, train
from braintumor.cli.common import Handler
from braintumor.errors import BrainTumorError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="braintumor",
        description="Brain tumor detection from MRI slices (decision support, not a diagnosis).",
    )
    parser.add_argument("--version", action="version", version=f"braintumor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in (data, train, evaluate, inference, server, app, pacs):
        group.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.func
    try:
        return handler(args)
    except BrainTumorError as exc:
        print(f"braintumor: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("braintumor: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"braintumor: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
