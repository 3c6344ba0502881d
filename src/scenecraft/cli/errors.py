"""The CLI's one error boundary, and the output-path checks commands run before any expensive work.

Every failure a user can cause (bad input, a bad file, a bad path, a model that will not load)
reaches the terminal as one plain-text sentence, ``error: ...``, with exit code 2. Its text is
never read as rich markup, and control characters and terminal escape sequences in it are
escaped. Any other exception is a bug: it keeps its traceback, with a note asking to report it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup
from typer.exceptions import TyperException

__all__ = ["ErrorBoundary", "UserError", "printable", "describe", "note", "check_output_path", "check_folder"]

BUG_NOTE = ("scenecraft: this is a bug, not a problem with your input; please report it with the command you ran "
            "and the traceback above")
_console = Console(stderr=True, highlight=False)


class UserError(ValueError):
    """A problem with what the user asked for that the CLI itself finds (a path, a missing input)."""


class ErrorBoundary(TyperGroup):
    """The root command group: runs every subcommand inside :func:`report_user_errors`."""

    def invoke(self, ctx: typer.Context) -> Any:
        with report_user_errors():
            return super().invoke(ctx)


@contextmanager
def report_user_errors() -> Iterator[None]:
    """Turn a user's error into ``error: <sentence>`` and exit code 2; add :data:`BUG_NOTE` to any other."""
    try:
        yield
    except (typer.Exit, typer.Abort, TyperException):  # usage errors and exits: typer reports them
        raise
    except Exception as error:
        if not isinstance(error, user_error_types()):
            error.add_note(BUG_NOTE)
            raise
        _console.print(Text.assemble(("error: ", "bold red"), printable(describe(error))), soft_wrap=True)
        raise typer.Exit(code=2) from None


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types a user can cause: bad values (every scenecraft error is a ``ValueError``:
    scenes, split ratios, plans, settings), files and paths (``OSError``), models that will not
    load, and pictures Pillow refuses as decompression bombs.

    Looked up in ``sys.modules``: a module that was never imported raised none of its errors, and
    importing it here (torch, for the model loader) would slow every error down.
    """
    kinds: list[type[BaseException]] = [ValueError, OSError]
    if (loading := sys.modules.get("scenecraft.generation.loading")) is not None:
        kinds.append(loading.ModelLoadError)
    if (pil := sys.modules.get("PIL.Image")) is not None:
        kinds += [pil.DecompressionBombError, pil.DecompressionBombWarning]
    return tuple(kinds)


def describe(error: BaseException) -> str:
    """The sentence for ``error``: its message; for an ``OSError``, the file and the reason
    (``out.png: no space left on device``) instead of ``[Errno 28] ...``."""
    if isinstance(error, OSError) and error.strerror:
        reason = error.strerror[:1].lower() + error.strerror[1:]
        names = [str(name) for name in (error.filename, error.filename2) if name is not None]
        return f"{' -> '.join(names)}: {reason}" if names else reason
    return str(error) or type(error).__name__


def printable(text: str, *, json: bool = False) -> str:
    """``text`` with every non-printable character but newline and tab escaped, as Python writes
    it (``\\x1b``, ``\\u202e``), or as JSON does (``\\u001b``) when ``json`` is true, so the result of
    escaping a JSON document is still valid JSON. Terminal escape sequences, carriage returns and
    bidirectional overrides in user, file or LLM text then show as text instead of acting."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in "\n\t" else _escape(ch, json) for ch in text)


def _escape(ch: str, json: bool) -> str:
    if not json:
        return ch.encode("unicode_escape").decode("ascii")
    code = ord(ch)
    if code > 0xFFFF:  # a surrogate pair, as JSON spells characters beyond the BMP
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def note(message: str) -> None:
    """Print a remark (not an error) on stderr, as plain escaped text."""
    _console.print(Text.assemble(("note: ", "yellow"), printable(message)), soft_wrap=True)


def check_output_path(path: Path, option: str, suffixes: tuple[str, ...] | None = None) -> None:
    """Refuse, with a sentence naming ``option``, an output file that could not be written: no
    suffix, a suffix not in ``suffixes`` (default: any format Pillow writes), a folder, a path under
    a file, a missing or unwritable folder. Run before loading models or calling an LLM."""
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name, e.g. {path / 'image.png'}")
    suffix = path.suffix.lower()
    if not suffix:
        raise UserError(f"{option} {path} has no suffix; name the file, e.g. {path}.png")
    if suffixes is not None and suffix not in suffixes:
        raise UserError(f"{option} {path} must end in {' or '.join(suffixes)}")
    if suffixes is None and suffix not in _writable_image_suffixes():
        raise UserError(f"{option} {path}: Pillow cannot write {suffix} files; use .png")
    if not path.parent.is_dir():
        existing = _nearest_existing(path.parent)
        if not existing.is_dir():
            raise UserError(f"{option} {path} lies under {existing}, which is a file, not a folder")
        raise UserError(f"{option} {path}: folder {path.parent} does not exist; create it first")
    _probe_writable(path.parent, option)


def check_folder(folder: Path, option: str) -> None:
    """Refuse a folder that is a file, lies under a file or cannot be written (one that does not
    exist yet is fine when the nearest existing folder above it is writable)."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        where = "is" if existing == folder else f"lies under {existing}, which is"
        raise UserError(f"{option} {folder} {where} a file, not a folder")
    _probe_writable(existing, option)


def _nearest_existing(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe_writable(folder: Path, option: str) -> None:
    """Create and remove a temporary file in ``folder``: the test that holds for root, read-only
    mounts and ACLs alike (``os.access`` does not)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".scenecraft-probe-")
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        raise UserError(f"{option}: cannot write into folder {folder}: {reason}") from None
    os.close(fd)
    os.unlink(probe)


def _writable_image_suffixes() -> tuple[str, ...]:
    from PIL import Image

    Image.init()
    return tuple(ext for ext, name in Image.registered_extensions().items() if name in Image.SAVE)
