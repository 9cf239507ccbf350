"""Showing text that came from a file (class names, config values, keys, library errors about a file) on a
terminal or in an error: control characters escaped, so a label cannot clear the screen or fake a line, and
length bounded, so a hostile value cannot make a gigabyte error message."""

import re
from typing import Any

# C0 and C1 control characters and DEL, except tab and newline (kept where multi-line text is wanted);
# plus the Unicode bidirectional overrides, which can make text read differently from what it is.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_AND_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape_char(m: "re.Match") -> str:
    c = m.group(0)
    return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(c) or (
        f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
    )


def escape_control(text: Any, keep_newlines: bool = False) -> str:
    """`text` with control characters (and bidi overrides) written as escapes; newlines and tabs kept only when
    `keep_newlines` (for multi-line messages)."""
    return (_CONTROL if keep_newlines else _CONTROL_AND_BREAKS).sub(_escape_char, str(text))


def excerpt(text: Any, limit: int = 80) -> str:
    """A short one-line, escaped excerpt of `text` (cut with '...' past `limit` characters)."""
    text = str(text)
    cut = text[:limit]
    return escape_control(cut) + ("..." if len(text) > limit else "")


def describe_value(value: Any, limit: int = 60) -> str:
    """A bounded description of a value for an error: scalars as a short repr, containers by type and size
    only (never formatted whole: a YAML alias bomb expands to gigabytes when printed)."""
    if isinstance(value, (dict, list, tuple, set)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, (bool, int, float)) or value is None:
        try:
            return excerpt(repr(value), limit)
        except ValueError:  # an int too long to turn into text
            return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    if isinstance(value, str):
        return f"'{excerpt(value, limit)}'"
    return f"a {type(value).__name__}"


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, without terminal colour codes and with runs of white space
    folded (many exceptions, e.g. EOFError, have no message: '')."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
    return re.sub(r"\s+", " ", lines[0])[:limit] if lines else ""


_WORKER_HEADER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.")


def error_message(e: BaseException) -> str:
    """An error's own message; for one re-raised from a DataLoader worker (whose message is the worker's whole
    traceback), the worker's original message alone, so a data error is one line with workers too."""
    text = str(e)
    if not _WORKER_HEADER.match(text):
        return text
    last = [line for line in text.rstrip().splitlines() if line.strip()][-1].strip()
    return re.sub(r"^[\w.]+(Error|Exception|Warning)\w*: ", "", last)
