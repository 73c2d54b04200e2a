# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""The package's import graph: no cycles, and data flows one way."""

import ast
from pathlib import Path

import pytest

import torchgeo_sar_damage

PACKAGE = Path(torchgeo_sar_damage.__file__).parent
NAME = 'torchgeo_sar_damage'


def module_name(path: Path) -> str:
    parts = [NAME, *path.relative_to(PACKAGE).with_suffix('').parts]
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob('*.py'))}


def imports(path: Path, known: set[str]) -> set[str]:
    """Modules of the package that a file imports (anywhere in it)."""
    name = module_name(path)
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[: len(base) - node.level + 1]
                prefix = '.'.join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ''
            targets = [prefix] + [f'{prefix}.{alias.name}' for alias in node.names]
        for target in targets:
            # the deepest module of the package the name refers to
            while target and target not in known:
                target = target.rpartition('.')[0]
            if target.startswith(NAME) and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(path, known) for name, path in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph, ignoring edges into a package's own ``__init__``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if node.startswith(nxt + '.'):
                continue  # a module importing its parent package's names
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_import_graph_has_no_cycle() -> None:
    edges = graph()
    assert len(edges) > 30
    # the graph is real: known edges are seen
    assert f'{NAME}.batch' in edges[f'{NAME}.datamodules.damage']
    assert f'{NAME}.datasets.cosmo_skymed' in edges[f'{NAME}.datasets']
    assert find_cycle(edges) is None


def test_cycle_detection_finds_a_cycle() -> None:
    edges = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}
    assert find_cycle(edges) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) is None


#: What each layer must never import (data flows one way: DESIGN's data flow).
FORBIDDEN = {
    'datasets': ('samplers', 'datamodules', 'models', 'tasks', 'predict', 'simulation'),
    'samplers': ('datamodules', 'models', 'tasks', 'predict', 'simulation'),
    'batch': ('datamodules', 'models', 'tasks', 'predict', 'simulation'),
    'datamodules': ('models', 'tasks', 'predict', 'simulation'),
    'models': ('datamodules', 'tasks', 'predict', 'simulation'),
    'tasks': ('datamodules', 'predict', 'simulation'),
    'predict': ('datamodules', 'simulation'),
    'simulation': ('datasets', 'samplers', 'datamodules', 'models', 'tasks', 'predict'),
}


@pytest.mark.parametrize('layer', sorted(FORBIDDEN))
def test_layers_import_downstream_only(layer: str) -> None:
    edges = graph()
    prefix = f'{NAME}.{layer}'
    for module, targets in edges.items():
        if module != prefix and not module.startswith(prefix + '.'):
            continue
        for target in targets:
            below = target.removeprefix(f'{NAME}.').split('.')[0]
            assert below not in FORBIDDEN[layer], f'{module} imports {target}'


def test_former_calibration_module_still_imports() -> None:
    """``torchgeo_sar_damage.calibration`` is now ``reliability``, with a warning."""
    import importlib
    import sys

    from torchgeo_sar_damage import reliability

    sys.modules.pop('torchgeo_sar_damage.calibration', None)
    with pytest.warns(FutureWarning, match='now torchgeo_sar_damage.reliability'):
        former = importlib.import_module('torchgeo_sar_damage.calibration')
    assert former.fit_temperature is reliability.fit_temperature
