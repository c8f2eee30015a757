"""Griffe extension used by this site: an ``Example:`` section with doctest lines renders as code.

griffe reads only the plural title ``Examples:`` as an examples section, whose ``>>>`` lines
become highlighted code blocks. A singular ``Example:`` becomes an admonition whose text is read
as Markdown, where ``>>>`` turns into nested block quotes. The package's docstrings use
``Example:`` (both titles are valid Google style), so before a docstring is parsed this
extension retitles the ``Example:`` sections of docstrings that hold doctest lines. The
docstrings themselves are not changed.
"""

from __future__ import annotations

import re

import griffe

_SINGULAR_TITLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class DoctestExamples(griffe.Extension):
    """Retitle ``Example:`` to ``Examples:`` in docstrings that contain ``>>>`` lines."""

    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        docstring = obj.docstring
        if docstring is not None and ">>>" in docstring.value:
            docstring.value = _SINGULAR_TITLE.sub(r"\1Examples:", docstring.value)
