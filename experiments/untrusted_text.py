"""Reading text a user hands us (spec files, prompts files, ``--set`` values) within bounds.

Everything here refuses rather than guesses: a file larger than its limit is not read, bytes
that are not UTF-8 (or contain NUL, i.e. a binary file) are refused with the offset of the
first bad byte, YAML is loaded with ``SafeLoader`` semantics (tags never execute), a mapping
with the same key twice is refused (YAML says keys are unique; PyYAML silently keeps the
last), and an anchor/alias graph whose *expanded* size is beyond a limit (a "billion laughs"
bomb) is refused before anything is built from it. :func:`shorten` bounds every value that
is quoted back in a message.

Example::

    data = load_yaml(text, where="spec.yaml")
"""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml

from experiments.errors import SpecError

#: A spec is a page of YAML; 1 MiB is far beyond any real one.
MAX_SPEC_BYTES = 1 << 20
#: A prompts file: 16 MiB holds ~100k long prompts.
MAX_PROMPTS_BYTES = 16 << 20
#: Nodes plus scalar characters after expanding every alias (a real spec has a few thousand).
MAX_EXPANDED = 2_000_000
#: Longest value quoted back in a message.
MAX_QUOTED = 80

_repr = reprlib.Repr()
_repr.maxstring = MAX_QUOTED
_repr.maxother = MAX_QUOTED
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxlevel = 3


def shorten(value: Any) -> str:
    """``repr(value)``, truncated so a message quoting it stays short (lists, dicts and strings alike)."""
    text = _repr.repr(value)
    return text if len(text) <= 2 * MAX_QUOTED else text[: 2 * MAX_QUOTED] + "..."


def read_text_file(path: Path, what: str, max_bytes: int) -> str:
    """The UTF-8 text of `path`, refusing a missing, oversized, binary or non-UTF-8 file by name."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{what} not found: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise SpecError(f"{path}: {what} is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB")
    data = path.read_bytes()[: max_bytes + 1]  # a file that grew meanwhile is cut, then refused below
    if len(data) > max_bytes:
        raise SpecError(f"{path}: {what} is larger than {max_bytes / 2**20:.0f} MiB")
    nul = data.find(b"\0")
    if nul >= 0:
        raise SpecError(f"{path}: {what} looks binary (NUL byte at offset {nul}); expected UTF-8 text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                        f"save it as UTF-8") from None
    return text.removeprefix("\ufeff")


class _Loader(yaml.SafeLoader):
    """SafeLoader (no python tags) that composes the node graph first, so it can be checked before building."""


def load_yaml(text: str, where: str) -> Any:
    """Parse YAML `text` safely; refuse duplicate keys and alias bombs. `where` names the source in messages."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{where}{line}: not valid YAML: {shorten(problem)[1:-1]}. "
                        f"Only plain YAML is accepted (no python tags)") from None
    finally:
        loader.dispose()


def _check(root: yaml.Node, where: str) -> None:
    """Duplicate keys anywhere, and the size the graph would have with every alias expanded."""
    size: dict[int, int] = {}
    visiting: set[int] = set()
    stack = [root]
    while stack:  # iterative post-order with memo: deep nesting cannot overflow, shared nodes are sized once
        node = stack[-1]
        nid = id(node)
        if nid in size:
            stack.pop()
            continue
        if isinstance(node, yaml.ScalarNode):
            size[nid] = 1 + len(node.value)
            stack.pop()
            continue
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
        if nid not in visiting:
            visiting.add(nid)
            if isinstance(node, yaml.MappingNode):
                _no_duplicates(node, where)
            if any(id(c) in visiting and id(c) not in size for c in children):
                raise SpecError(f"{where} (line {node.start_mark.line + 1}): a YAML alias refers to a node that "
                                f"contains it (a recursive structure); refused")
            stack.extend(c for c in children if id(c) not in size)
            continue
        stack.pop()
        total = 1 + sum(size[id(c)] for c in children)
        size[nid] = total
        if total > MAX_EXPANDED:
            raise SpecError(f"{where} (line {node.start_mark.line + 1}): YAML expands to more than "
                            f"{MAX_EXPANDED:,} nodes and characters (aliases repeated inside each other?); refused")


def _no_duplicates(node: yaml.MappingNode, where: str) -> None:
    seen: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        ident = (key.tag, key.value)
        if ident in seen:
            raise SpecError(f"{where} (line {key.start_mark.line + 1}): key {shorten(key.value)} appears twice in "
                            f"one mapping (first on line {seen[ident]}); keep one")
        seen[ident] = key.start_mark.line + 1
