# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Sphinx configuration: ``make docs`` (sphinx-build -W, warnings are errors).

The build only reads the sources: ``docs/bad_inputs.md`` is generated beforehand from
the catalogue in ``tests/test_bad_inputs.py`` (``make bad-inputs``), and the test suite
checks that the committed page is current.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torchgeo_sar_damage

project = 'torchgeo-sar-damage'
author = 'torchgeo-sar-damage Contributors'
copyright = 'torchgeo-sar-damage Contributors'
release = torchgeo_sar_damage.__version__
version = release

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.viewcode',
]
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
root_doc = 'index'
exclude_patterns = ['_build', 'Thumbs.db', '.DS_Store']

# Google docstrings, as the package writes them
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_default_options = {'members': True, 'show-inheritance': True}
autodoc_mock_imports: list[str] = []

myst_enable_extensions = ['colon_fence']
myst_heading_anchors = 3
suppress_warnings: list[str] = []

html_theme = 'sphinx_rtd_theme'
html_title = f'torchgeo-sar-damage {release}'
html_static_path: list[str] = []

nitpicky = False
