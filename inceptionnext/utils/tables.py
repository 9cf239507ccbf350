"""Tables for a terminal or a README: markdown and plain columns, with blank cells for missing values."""

from typing import Any, Optional, Sequence


def cell(value: Any, spec: str = "", suffix: str = "") -> str:
    """One cell: `value` formatted by `spec` with `suffix`, or blank when there is no value."""
    return "" if value is None else format(value, spec) + suffix


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], title: Optional[str] = None) -> str:
    """A markdown table (a title line above it when given); cells are written as they are."""
    lines = [title] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]], gap: int = 2) -> str:
    """Left-aligned columns as wide as their widest cell, the header ruled off with dashes, for a terminal."""
    table = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    table.insert(1, ["-" * w for w in widths])
    return "\n".join((" " * gap).join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table)
