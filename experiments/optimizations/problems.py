"""How a refusal reads: one line, the exception's type and its first line."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
