# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""GEMExposure over the simulator's towns: provinces by default, districts on request."""

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import torch

from torchgeo_sar_damage.datamodules import SARDamageDataModule
from torchgeo_sar_damage.datasets import GEMExposure
from torchgeo_sar_damage.datasets.gem import FEATURE_NAMES
from torchgeo_sar_damage.simulation.cities import CITIES
from torchgeo_sar_damage.simulation.run import simulate

#: The class-share features (four groups), the ones a province's districts average to.
SHARES = [n for n in FEATURE_NAMES if n.split('_')[1] in ('material', 'llrs', 'code')]
SHARES += [n for n in FEATURE_NAMES if n.startswith('gem_storeys_')]


def town_exposure(scene: Path, entry: dict[str, Any], slug: str) -> GEMExposure:
    files = entry['files']
    return GEMExposure(
        [scene / slug / f for f in files['gem']], admin=scene / slug / files['admin']
    )


def footprints(scene: Path, entry: dict[str, Any], slug: str) -> gpd.GeoDataFrame:
    return gpd.read_file(scene / slug / entry['files']['osm'])


def test_province_town_gives_every_building_the_same_features(
    tiny_scene: Path, tiny_manifest: dict[str, Any]
) -> None:
    for slug, entry in tiny_manifest['cities'].items():
        exposure = town_exposure(tiny_scene, entry, slug)
        assert list(exposure.units.index) == [CITIES[slug].province_id]
        assert exposure.units['name'].iloc[0] == CITIES[slug].province_name
        assert exposure.units['buildings'].iloc[0] == entry['buildings']
        features = exposure.features(footprints(tiny_scene, entry, slug))
        assert len(features) > 0.8 * entry['buildings']
        assert (features['gem_missing'] == 0).all()
        # province level: one vector for the whole town, as with GEM's real files
        unique = features.drop_duplicates()
        assert len(unique) == 1
        np.testing.assert_allclose(
            unique.to_numpy()[0],
            exposure.units[list(FEATURE_NAMES)].to_numpy()[0],
            rtol=1e-6,
        )


def test_districts_on_request_average_to_the_province(
    tiny_scene: Path, tiny_manifest: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / 'districts'
    manifest = simulate(
        out,
        cities=['nurdagi'],
        n_buildings=150,
        seed=0,
        pixel_m=1.0,
        progress=False,
        gem_level=2,
    )
    districts = town_exposure(out, manifest['cities']['nurdagi'], 'nurdagi')
    province = town_exposure(tiny_scene, tiny_manifest['cities']['nurdagi'], 'nurdagi')
    assert len(districts.units) == 5
    features = districts.features(
        footprints(out, manifest['cities']['nurdagi'], 'nurdagi')
    )
    assert len(features.drop_duplicates()) > 1  # finer context varies within the town
    # the province's shares are the districts' shares weighted by their buildings
    weights = districts.units['buildings'].to_numpy()
    assert weights.sum() == province.units['buildings'].iloc[0]
    mean = weights @ districts.units[SHARES].to_numpy() / weights.sum()
    np.testing.assert_allclose(mean, province.units[SHARES].to_numpy()[0], atol=1e-12)


def test_normalisation_of_constant_gem_features(
    training_scene: Path, tmp_path: Path
) -> None:
    """One training town: its GEM features are constant, their std becomes 1."""
    dm = SARDamageDataModule(
        training_scene,
        train_cities=['nurdagi'],
        val_cities=['islahiye'],
        test_cities=[],
        modalities=('sar', 'osm', 'gem'),
        size_m=16.0,
        batch_size=8,
        progress=False,
        chips_root=tmp_path / 'chips',
    )
    statistics = dm.statistics
    names = list(statistics.tabular_names)
    gem = [names.index(n) for n in FEATURE_NAMES]
    std = np.asarray(statistics.tabular_std)
    assert np.isfinite(std).all()
    assert np.isfinite(statistics.tabular_mean).all()
    np.testing.assert_array_equal(std[gem], 1.0)
    dm.setup('fit')
    batch = dm.normalise(next(iter(dm.val_dataloader())))
    assert torch.isfinite(batch['tabular']).all()
    # another town's (constant) province vector stays finite after normalisation
    assert batch['tabular'].abs().max() < 1e3
