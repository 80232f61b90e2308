"""User-facing errors.

:class:`InputError` carries a one-paragraph message that names the offending file (and row or
key) and says how to fix it. Rule scripts print it without a traceback and exit with status 1,
so the user reads the fix, not a stack of frames.
"""

from __future__ import annotations

import functools
import sys


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
