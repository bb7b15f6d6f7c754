"""The jinja2 templates of templates/, shipped as package data: importlib.resources finds them the
same way in installed and editable copies. Strict: a misspelt variable fails instead of rendering
as nothing."""
from __future__ import annotations

from importlib import resources

import jinja2


def environment(**options) -> jinja2.Environment:
    """Templates by their path under templates/ (``preview.md.j2``, ``dns/zone.j2``)."""
    def load(path: str) -> str:
        return (resources.files("templates") / path).read_text(encoding="utf-8")

    return jinja2.Environment(loader=jinja2.FunctionLoader(load), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=False, **options)
