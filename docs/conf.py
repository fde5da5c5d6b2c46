"""Sphinx configuration for deepinv-dynnets."""

import os
import sys

os.environ.setdefault("MPLBACKEND", "Agg")

import deepinv_dynnets

# docs/_ext: benchmark_tables.py renders benchmark results and model cards as tables,
# api_reference.py writes the API reference from deepinv_dynnets.__all__
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext"))

project = "deepinv-dynnets"
author = "deepinv-dynnets developers"
copyright = "2026, deepinv-dynnets developers"
release = deepinv_dynnets.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
    "sphinx_gallery.gen_gallery",
    "sphinxcontrib.bibtex",
    "benchmark_tables",
    "api_reference",
]

autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Modules documented by their class pages; forward() signatures are documented in the class.
autodoc_inherit_docstrings = False
napoleon_google_docstring = False

bibtex_bibfiles = ["refs.bib"]
bibtex_default_style = "plain"
bibtex_reference_style = "author_year"

intersphinx_mapping = {}  # offline builds: no remote inventories

sphinx_gallery_conf = {
    "examples_dirs": ["../examples"],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r"/demo_",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "plot_gallery": "True",
}

html_theme = "furo"
html_title = "deepinv-dynnets"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
suppress_warnings = ["config.cache"]
nitpicky = False
