"""User-facing errors.

:class:`InputError` carries a one-paragraph message that names the offending file (and row or
key) and says how to fix it. Rule scripts print it without a traceback and exit with status 1,
so the user reads the fix, not a stack of frames.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import zipfile

RECOMPUTE = "delete it and rerun; the iteration is recomputed"


class InputError(ValueError):
    """Bad user input: a file, a row or a config key that cannot be processed."""


def exit_on_input_error(func):
    """Decorator for rule-script entry points: print :class:`InputError` and exit 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except InputError as err:
            print(f"\ncryosnake: ERROR: {err}\n", file=sys.stderr)
            sys.exit(1)

    return wrapper


@contextlib.contextmanager
def reading_intermediate(path, fix: str = RECOMPUTE):
    """Turn the low-level error of reading a damaged workflow file (cut short by a full disk or
    a killed job: ``BadZipFile``, ``EOFError``, ``JSONDecodeError``, a missing key, a truncated
    MRC) into an :class:`InputError` that names ``path`` and says how to recover."""
    try:
        yield
    except (ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        reason = getattr(err, "reason", None) or f"{type(err).__name__}: {err}"
        raise InputError(f"{path} is damaged ({reason}); {fix}.") from err
