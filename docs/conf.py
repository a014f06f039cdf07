"""
Sphinx configuration for the HALP documentation.

Build with ``make docs``, which runs::

    sphinx-build -W --keep-going -q -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

# Document the halp package of this checkout, not some other installed copy.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import halp  # noqa: E402

# -- Project -----------------------------------------------------------------

project = "HALP"
author = "the HALP developers"
copyright = "the HALP developers"
version = halp.__version__
release = halp.__version__

# -- General -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    # docs/security.md is Markdown.
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
default_role = "literal"
highlight_language = "none"

# -- autodoc -----------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Show defaults as written in the source (``limits=Limits()``), not as reprs.
autodoc_preserve_defaults = True
# Methods that override Twisted's without a docstring of their own
# (connectionMade, lineReceived, postOptions, ...) would otherwise show
# Twisted's epytext docstrings, which are about Twisted, not HALP.
autodoc_inherit_docstrings = False
# zope.interface interfaces have no __qualname__, so Sphinx would print
# annotations naming them as "<InterfaceClass ...>".  HALP's modules use
# postponed annotations, so these aliases let autodoc name them properly.
autodoc_type_aliases = {
    "IHostStore": "halp.interfaces.IHostStore",
    "IAddress": "twisted.internet.interfaces.IAddress",
    "IDelayedCall": "twisted.internet.interfaces.IDelayedCall",
    "IListeningPort": "twisted.internet.interfaces.IListeningPort",
    "IReactorFromThreads": "twisted.internet.interfaces.IReactorFromThreads",
    "IReactorTime": "twisted.internet.interfaces.IReactorTime",
    "IService": "twisted.application.service.IService",
    "IStreamServerEndpoint": "twisted.internet.interfaces.IStreamServerEndpoint",
}

# -- HTML --------------------------------------------------------------------

html_theme = "alabaster"
html_theme_options = {
    "description": "Host Address List Protocol",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []


# -- A directive for zope.interface interfaces -------------------------------
#
# autodoc does not recognise zope.interface interfaces (they are instances of
# InterfaceClass, not classes), so ``automodule`` silently leaves them out.
# ``.. autointerface:: module.IName`` documents one as a class, with its
# attributes and methods in source order, from the interface's own docstrings.


class AutoInterface(SphinxDirective):
    required_arguments = 1
    has_content = False

    def run(self) -> list[Any]:
        modname, _, name = self.arguments[0].rpartition(".")
        module = importlib.import_module(modname)
        iface = getattr(module, name)
        source = inspect.getsourcefile(module)
        if source:
            self.env.note_dependency(source)

        lines = [f".. py:class:: {name}", f"   :module: {modname}", ""]
        lines += _indent(iface.__doc__, 3)
        for member in iface.names():
            described = iface[member]
            if hasattr(described, "getSignatureString"):
                lines.append(f"   .. py:method:: {member}{described.getSignatureString()}")
            else:
                lines.append(f"   .. py:attribute:: {member}")
            lines.append("")
            lines += _indent(described.__doc__, 6)

        content = StringList()
        origin, line = self.get_source_info()
        for text in lines:
            content.append(text, origin, line)
        container = nodes.container()
        self.state.nested_parse(content, self.content_offset, container)
        return list(container.children)


def _indent(doc: str | None, width: int) -> list[str]:
    text = inspect.cleandoc(doc or "")
    pad = " " * width
    return [pad + line if line else "" for line in text.splitlines()] + [""]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("autointerface", AutoInterface)
    return {"parallel_read_safe": True}
