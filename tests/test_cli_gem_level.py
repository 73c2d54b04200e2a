# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""``sardamage simulate --gem-level``: GEM per province (default) or per district."""

import json
from pathlib import Path

import pytest

from torchgeo_sar_damage.cli import main


def test_help_explains_the_levels(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(['simulate', '--help'])
    assert exc.value.code == 0
    text = ' '.join(capsys.readouterr().out.split())
    assert '--gem-level {1,2}' in text
    assert '1 = per province, as GEM publishes Türkiye' in text
    assert 'default' in text
    assert '2 = per simulated district' in text


@pytest.mark.parametrize('value', ['0', '3', 'districts'])
def test_bad_level_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(['simulate', '--out', str(tmp_path / 'out'), '--gem-level', value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert '--gem-level' in err
    assert 'Traceback' not in err
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize(('flag', 'level'), [([], 1), (['--gem-level', '2'], 2)])
def test_level_reaches_the_files(tmp_path: Path, flag: list[str], level: int) -> None:
    out = tmp_path / 'out'
    argv = ['simulate', '--out', str(out), '--cities', 'nurdagi', '--buildings', '30']
    assert main([*argv, '--pixel-m', '2', '--quiet', *flag]) == 0
    manifest = json.loads((out / 'scene.json').read_text(encoding='utf-8'))
    assert manifest['gem_level'] == level
    town = manifest['cities']['nurdagi']
    assert town['gem_level'] == level
    names = sorted(p.name for p in (out / 'nurdagi').glob('Exposure_*.csv'))
    assert names == [
        f'Exposure_{o}_Turkey_Adm{level}.csv' for o in ('Com', 'Ind', 'Res')
    ]
    assert sorted(town['files']['gem']) == names
