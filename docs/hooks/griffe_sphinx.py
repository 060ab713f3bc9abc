"""Griffe extension (mkdocstrings' ``extensions`` option in mkdocs.yml): ssl_bench's docstrings as Markdown.

The docstrings of ssl_bench are written for a reader of the source: reStructuredText's inline roles
(``:func:`x```, ``:class:`x```, ``:meth:`x```, ``:mod:`x```, ...), double-backtick literals, ``::`` before an
indented block, doctest examples (``>>>``), and the meaning of a dataclass field as a ``#`` comment above it or
beside it. Markdown shows a role as literal text and reads ``>>>`` as nested quotes, so this extension rewrites each
docstring once the package is loaded, without touching the source:

- a role becomes the object's name in code, linked to its entry in the API reference when the site documents it
  (an autorefs cross-reference marked optional: an object the site leaves out stays plain code, never a warning);
  ``~a.b.c`` shows ``c``, ``title <target>`` shows the title;
- ``text::`` before an indented block becomes ``text:`` (the block stays code);
- a run of doctest lines (``>>>`` / ``...`` and the output below them) becomes a fenced ``pycon`` block;
- a dataclass field (or module constant) without a docstring gets the comment written above it, or beside it, as
  its docstring, so the API reference says what ``Context.epoch`` or ``Plan.margin`` mean;
- a parameter whose default is read from the objective's config dataclass (``num_prototypes: int =
  _D.num_prototypes``, the defaults declared once) shows that default's value in the signature.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?P<role>func|class|meth|mod|attr|data|exc|obj|const|type):`(?P<body>[^`]+)`")
_TITLED = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$")
_DOCTEST = re.compile(r"^(?P<indent>\s*)>>>( |$)")


def _resolve(obj: griffe.Object, name: str) -> str | None:
    """The full path of ``name`` as seen from ``obj``'s scope (its parents', then as written), if griffe knows it."""
    scope: Any = obj
    while scope is not None:
        try:
            return scope.resolve(name)
        except Exception:  # noqa: BLE001  (griffe raises NameResolutionError, or others on odd scopes)
            scope = scope.parent
    return name if "." in name else None


def _role(obj: griffe.Object, match: re.Match) -> str:
    body = match["body"].strip()
    if titled := _TITLED.match(body):
        title, target = titled["title"], titled["target"].strip()
    else:
        target = body.lstrip("~")
        title = target.rsplit(".", 1)[-1] if body.startswith("~") else target
    target = target.lstrip(".")
    path = _resolve(obj, target)
    code = f"<code>{title}</code>"
    if path is None:
        return code
    # mkdocs-autorefs: an optional cross-reference renders as plain text when nothing on the site documents it.
    return f'<autoref identifier="{path}" optional>{code}</autoref>'


def _fence_doctests(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _DOCTEST.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent = m["indent"]
        block = []
        while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
            block.append(lines[i][len(indent):])
            i += 1
        if out and out[-1].strip():
            out.append("")
        out += [f"{indent}```pycon", *(indent + b for b in block), f"{indent}```"]
    return out


def _escape(line: str) -> str:
    """``<`` and ``>`` outside code spans as entities: ``results/runs/<run>`` is a placeholder, not an HTML tag."""
    parts = re.split(r"(`+[^`]*`+)", line)
    return "".join(p if p.startswith("`") else p.replace("<", "&lt;").replace(">", "&gt;") for p in parts)


def markdown(obj: griffe.Object, text: str) -> str:
    """``text`` (a docstring of ``obj``) with its reStructuredText constructs rewritten as Markdown."""
    out: list[str] = []
    fenced = False
    for line in _fence_doctests(text.splitlines()):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        # An indented block (4 spaces after a blank line, or continuing one) is code: left as written.
        indented = line.startswith("    ") and (not out or not out[-1].strip() or out[-1].startswith("    "))
        if not fenced and not indented and not line.lstrip().startswith("```"):
            line = _ROLE.sub(lambda m: _role(obj, m), _escape(line))
            if line.rstrip().endswith("::") and line.strip() != "::":
                line = line.rstrip()[:-1]
        out.append(line)
    return "\n".join(out)


def _comment(obj: griffe.Object) -> str | None:
    """The ``#`` comment above a field (the contiguous comment lines right above it) or beside it."""
    if obj.lineno is None or obj.filepath is None or isinstance(obj.filepath, list):
        return None
    try:
        source = obj.lines_collection[obj.filepath]
    except KeyError:
        return None
    line = source[obj.lineno - 1]
    inline = re.search(r"\s#\s?(.*)$", line) if "#" in line and '"' not in line and "'" not in line else None
    above: list[str] = []
    i = obj.lineno - 2
    while i >= 0 and source[i].strip().startswith("#"):
        above.insert(0, source[i].strip().lstrip("#").strip())
        i -= 1
    text = " ".join(above)
    if inline and inline[1].strip() and not inline[1].startswith(("noqa", "type:")):
        text = f"{text} {inline[1].strip()}".strip()
    return text or None


def _declared_default(func: griffe.Object, default: Any) -> Any:
    """``_D.x`` or ``SwAVConfig.x`` (a dataclass's field, ``_D`` naming the dataclass) -> the field's value."""
    m = re.fullmatch(r"(\w+)\.(\w+)", str(default))
    module = func.module
    if not m or m[1] not in module.members:
        return default
    base: Any = module.members[m[1]]
    if base.is_alias:  # an import (math.nan): not a declared default
        return default
    if base.is_attribute and str(base.value) in module.members and not module.members[str(base.value)].is_alias:
        base = module.members[str(base.value)]
    attr = base.members.get(m[2]) if base.is_class else None
    return attr.value if attr is not None and attr.value is not None else default


def _documented_by_parent(obj: griffe.Object) -> bool:
    """The class's docstring already describes the field (``:ivar name:``): no second entry."""
    doc = obj.parent.docstring.value if obj.parent is not None and obj.parent.docstring is not None else ""
    return re.search(rf":(?:ivar|var|cvar) {re.escape(obj.name)}:", doc) is not None


class SphinxToMarkdown(griffe.Extension):
    """The rewrite above, applied to every object of a loaded package."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.is_function:
            for param in obj.parameters:
                if param.default is not None:
                    param.default = _declared_default(obj, param.default)
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj, obj.docstring.value)
        elif obj.is_attribute and not _documented_by_parent(obj) and (text := _comment(obj)):
            obj.docstring = griffe.Docstring(markdown(obj, text), parent=obj)
