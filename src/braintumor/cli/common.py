"""What every command module shares: the progress bar and environment defaults read when a command runs.

Why read in the handler and not as argparse defaults: a default is evaluated while the parser is built, so a bad
``BRAINTUMOR_PORT=abc`` broke every command, ``--version`` included, with a traceback. Read here, it is one line
naming the variable, for the command that uses it.

Example:
    >>> import os
    >>> os.environ["BRAINTUMOR_EXAMPLE_PORT"] = "abc"
    >>> env_int("BRAINTUMOR_EXAMPLE_PORT", 8000)
    Traceback (most recent call last):
    ...
    braintumor.errors.BrainTumorError: BRAINTUMOR_EXAMPLE_PORT must be a whole number, not 'abc'
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from braintumor.errors import BrainTumorError


def env_str(name: str, default: str) -> str:
    """``$name`` when set and not empty, else ``default``."""
    return os.environ.get(name) or default


def env_int(name: str, default: int) -> int:
    """``$name`` as a whole number, else ``default``; anything else is a one-line error."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BrainTumorError(f"{name} must be a whole number, not {raw!r}") from None


def env_path(name: str, default: Path) -> Path:
    """``$name`` as a path, else ``default``."""
    raw = os.environ.get(name)
    return Path(raw) if raw else default


def progress(total: int, desc: str) -> Any:
    """A tqdm bar on stderr, shown only in a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not sys.stderr.isatty())
