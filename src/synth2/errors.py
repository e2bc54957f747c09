"""Errors a user can fix: each says, in one line, which file, record or key is wrong and why.

The CLI prints them as one line and exits 2 (`synth2 --debug ...` shows the traceback).
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: a path, a file, a record or a config key. The message names it."""


# What else the CLI reports as the user's input being wrong: a missing or unreadable path
# (OSError), a value the library refused with its reason (ValueError, which includes
# json.JSONDecodeError), an unknown config key or record field (KeyError).
USER_ERRORS = (UserError, OSError, ValueError, KeyError)


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    return f"{type(error).__name__}: {message}" if not isinstance(error, UserError) else message
