"""Sphinx configuration of the dqrxfer documentation.

Build: ``sphinx-build -W -b html docs docs/_build/html`` (the test suite does
this on every run, warnings as errors).  Pages are Markdown (MyST);
``command-output`` blocks run the installed commands, so their ``--help`` is
always the real one.
"""

from __future__ import annotations

import dqrxfer

project = "dqrxfer"
author = "dqrxfer developers"
copyright = "dqrxfer developers"
version = release = dqrxfer.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.graphviz",
    "sphinxcontrib.programoutput",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]

myst_enable_extensions = ["colon_fence", "deflist"]
# Anchors for headings down to ###, so pages can link to sections.
myst_heading_anchors = 3

graphviz_output_format = "svg"

html_theme = "alabaster"
html_title = f"dqrxfer {release}"
html_theme_options = {
    "description": "Data Quality Reports from the sites to the central server",
    "fixed_sidebar": True,
}
