"""User errors: bad input that the command line reports in one or two lines (rank 0: imports
nothing of memarch, so every layer may raise them).

A *user error* is caused by what the user gave — a config field or override, a config or grid
file, a path — not by a bug inside memarch. It is any of

- :class:`UserError` and its subclasses (all of them ``ValueError``, so callers that catch
  ``ValueError`` keep working): :class:`ConfigError` (a config field is invalid; the message
  names the dotted key and the accepted values) and :class:`ConfigFileError` (code inside a
  config or grid file raised; the message names the file and the line);
- ``ValueError`` (the house convention for rejected input: the message names the field);
- ``FileNotFoundError``, ``NotADirectoryError``, ``IsADirectoryError`` and
  ``PermissionError`` (a path that does not exist or cannot be read; the path is named).

Every other exception is an internal bug and keeps its traceback. :func:`user_error_lines`
classifies an exception and gives the lines the command line prints.
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path

PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
MAX_LINES = 2  # lines of a user error on stderr


class UserError(ValueError):
    """Bad input given by the user (a ``ValueError``)."""


class ConfigError(UserError):
    """A config field is invalid; the message starts with its dotted key (``model.d_model``)
    and says what is accepted."""


class ConfigFileError(UserError):
    """An exception raised by code inside a user's Python file (a config file executed by
    ``load_config``, a grid file): ``path``, the 1-based ``line`` in that file (None when no
    frame of the file is on the traceback) and the original exception ``cause``."""

    def __init__(self, path: str | Path, line: int | None, cause: BaseException):
        self.path, self.line, self.cause = str(path), line, cause
        where = self.path if line is None else f"{self.path}, line {line}"
        what = str(cause) if isinstance(cause, ValueError) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"{where}: {what}")


def line_in_file(err: BaseException, path: str | Path) -> int | None:
    """The line of file ``path`` where ``err`` was raised or passed through: the innermost
    traceback frame in that file (a ``SyntaxError``'s own line first); None if none is."""
    target = os.path.realpath(path)
    if isinstance(err, SyntaxError) and err.filename and err.lineno:
        if os.path.realpath(err.filename) == target:
            return err.lineno
    line = None
    for frame in traceback.extract_tb(err.__traceback__):
        if os.path.realpath(frame.filename) == target:
            line = frame.lineno
    return line


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is a user error (see the module docstring), not an internal bug."""
    return isinstance(err, (ValueError, *PATH_ERRORS))


def user_error_lines(err: BaseException) -> list[str] | None:
    """At most :data:`MAX_LINES` lines describing user error ``err`` (the path named for a
    path error), or None when ``err`` is an internal bug. A longer message keeps its first
    line and says how to see the rest."""
    if not is_user_error(err):
        return None
    if isinstance(err, PATH_ERRORS) and err.filename is not None:
        reason = err.strerror or type(err).__name__
        lines = [f"{reason}: {os.fsdecode(err.filename)!r}"]
    else:
        text = str(err).strip() or type(err).__name__
        lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_LINES:
        more = len(lines) - 1
        lines = [lines[0], f"({more} more lines: --debug or MEMARCH_DEBUG=1 shows them)"]
    return lines


__all__ = [
    "MAX_LINES",
    "PATH_ERRORS",
    "ConfigError",
    "ConfigFileError",
    "UserError",
    "is_user_error",
    "line_in_file",
    "user_error_lines",
]
