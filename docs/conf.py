# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Sphinx configuration: ``make docs`` (sphinx-build -W, warnings are errors)."""

import importlib.util
import os
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
# links from the results pages and the README to files outside the site
suppress_warnings = ['myst.xref_missing', 'myst.header']

html_theme = 'sphinx_rtd_theme'
html_title = f'torchgeo-sar-damage {release}'
html_static_path: list[str] = []

nitpicky = False


def _write_bad_inputs_table() -> None:
    """Regenerate docs/bad_inputs.md from the catalogue in tests/test_bad_inputs.py."""
    path = ROOT / 'tests' / 'test_bad_inputs.py'
    spec = importlib.util.spec_from_file_location('_bad_inputs_catalogue', path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = Path(__file__).parent / 'bad_inputs.md'
    text = module.render_table()
    if not page.is_file() or page.read_text('utf-8') != text:
        page.write_text(text, 'utf-8')


if os.environ.get('SARDAMAGE_DOCS_NO_TABLE') != '1':
    _write_bad_inputs_table()
