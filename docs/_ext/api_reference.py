"""Sphinx extension: the API reference, generated from ``deepinv_dynnets.__all__``.

The public API is the flat namespace of :mod:`deepinv_dynnets` (as in torchdiffeq and
``deepinv.models``), so the reference is written from it and cannot drift: every name in
``__all__`` gets an entry, grouped by the subpackage that defines it (the subpackage's
docstring gives the section's introduction), in the order of ``__all__``.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

PACKAGE = "deepinv_dynnets"
# not .rst: Sphinx would read it as a page of its own (duplicate descriptions)
OUTPUT = "generated/api_entries.inc"


def _directive(name: str, obj) -> str:
    if inspect.isclass(obj):
        return f".. autoclass:: {PACKAGE}.{name}\n   :members:\n"
    if callable(obj):
        return f".. autofunction:: {PACKAGE}.{name}\n"
    return f".. autodata:: {PACKAGE}.{name}\n   :annotation:\n"


def render() -> str:
    package = importlib.import_module(PACKAGE)
    subpackages = [
        getattr(package, n) for n in package.__all__ if inspect.ismodule(getattr(package, n))
    ]
    # a name's section is the subpackage that exports it (constants have no __module__)
    home = {n: m for m in reversed(subpackages) for n in getattr(m, "__all__", ())}
    sections: dict[str, list[str]] = {}
    for name in package.__all__:
        obj = getattr(package, name)
        if inspect.ismodule(obj):
            continue  # subpackages are sections, not entries
        module = home.get(name)
        if module is None:
            raise ValueError(f"{PACKAGE}.{name} is exported by no subpackage's __all__")
        sections.setdefault(module.__name__, []).append(_directive(name, obj))
    lines = []
    for module_name, entries in sections.items():
        title = f":mod:`{module_name}`"
        lines += [title, "-" * len(title), ""]
        intro = inspect.getdoc(importlib.import_module(module_name))
        if intro:
            lines += [intro.split("\n\n")[0], ""]
        lines += entries
    return "\n".join(lines) + "\n"


def _write(app) -> None:
    path = Path(app.srcdir) / OUTPUT
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render()
    if not path.is_file() or path.read_text() != text:  # unchanged file: no rebuild
        path.write_text(text)


def setup(app):
    app.connect("builder-inited", _write)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
