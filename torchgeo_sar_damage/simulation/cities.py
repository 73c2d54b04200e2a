# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Built-in towns hit by the 6 February 2023 Kahramanmaraş earthquakes.

Each town is placed at its real coordinates and carries what the simulator needs to make
it differ from the others the way real towns do: street-grid orientation and regularity,
block and plot sizes, building density, storey distribution, construction mix, the
recorded shaking near it and the damage rate observed there.

Sources, all public:

* Coordinates: the town centres; distances to the rupture follow from the surface traces
  in :mod:`~torchgeo_sar_damage.simulation.shaking` (USGS ShakeMap finite-fault model of
  the Mw 7.8 event).
* Anchor PGA: AFAD stations inside the town (mean of Kahramanmaraş 4625, 4624 and
  4620; İslahiye 2718; Nurdağı 2712; Adıyaman 0201), as compiled in the GEM Foundation's
  GitHub repository ``gem/earthquake-scenarios``
  (``Turkey/20230206_M7.8_KahramanmarasGaziantep/Recording_Stations/Stations_AFAD.csv``)
  or, for Antakya with its eight stations from 0.36 to 1.35 g, the USGS ShakeMap value
  at the USGS/KOERI/METU/GEM building-survey sites (GitHub repository
  ``maxandersonloake/TUR2023_02_06``, ``Data/``).
* Storeys and construction mix: GEM exposure v2023.1 per province (GitHub repository
  ``gem/global_exposure_model``, ``Europe/Turkey/Exposure_Res_Turkey_Adm1.csv``), the
  city inventory supplied to USGS (Antakya, Nurdağı, Adıyaman) and the field survey,
  both in ``maxandersonloake/TUR2023_02_06``.
* Observed damage: the Ministry of Environment's first results (15 Feb 2023) per
  district, as reported by the Turkish press, and the StEER/EERI province shares of
  severe damage, partial and total collapse (``gem/earthquake-scenarios``,
  ``Impact/Impact_Buildings_ID_1.csv``). The ranges below are the share of buildings
  with EMS-98 grade 4 or 5 (very heavy damage or destruction), which is what
  Copernicus EMS grades as ``Damaged`` or ``Destroyed`` from above.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ConstructionMix:
    """Shares of building classes in one kind of district (they need not sum to one).

    Attributes:
        rc_frame: reinforced-concrete infilled frames (GEM ``CR/LFINF``).
        rc_wall: reinforced-concrete walls, tunnel form (``CR/LWAL``), mid/high rise.
        urm: unreinforced masonry of hollow blocks, bricks or stone (``MUR+...``).
        adobe: adobe masonry (``MUR+ADO``).
        code_shares: shares of pre-code / low-code / moderate-code RC, written in GEM's
            Türkiye dialect as ``CDL+DUL``, ``CDL+DUM`` and ``CDM+...``.
    """

    rc_frame: float
    rc_wall: float
    urm: float
    adobe: float
    code_shares: tuple[float, float, float]


@dataclass(frozen=True)
class City:
    """A built-in town of the 2023 earthquake scenario.

    Attributes:
        slug: lowercase ASCII name used for folders and ``--cities``.
        name: the town's name.
        lon: longitude of the town centre (WGS84).
        lat: latitude of the town centre.
        province_id: GEM ``ID_1`` of the province (``TR-46``...).
        province_name: GEM ``NAME_1`` (upper case with Turkish letters).
        ems_aoi: Copernicus EMS EMSR648 area of interest number used in file names.
        anchor_pga_g: PGA recorded or ShakeMap-estimated near the centre (g).
        vs30_m_s: time-averaged shear-wave velocity of the top 30 m (m/s).
        elevation_m: terrain elevation of the centre (m).
        grid_azimuth_deg: orientation of the street grid, clockwise from north.
        grid_jitter_deg: block-to-block orientation noise (organic old towns are large).
        block_m: typical block size (along, across) in metres.
        street_m: street width in metres.
        plot_frontage_m: range of plot frontages in metres.
        plot_fill: probability that a plot holds a building.
        storey_weights: relative frequency of 1, 2, ... storeys (index 0 = 1 storey).
        mix: construction mix of ordinary districts.
        old_town_mix: construction mix of the oldest district (more masonry, less code).
        new_town_mix: construction mix of the newest district (taller, better code).
        damage_range: observed share of buildings with EMS-98 grade >= 4 (min, max).
        incidence_deg: incidence angle of the simulated acquisition over the town.
        orbit_direction: ``ASCENDING`` or ``DESCENDING`` pass of that acquisition.
        damage_source: where ``damage_range`` comes from.
    """

    slug: str
    name: str
    lon: float
    lat: float
    province_id: str
    province_name: str
    ems_aoi: int
    anchor_pga_g: float
    vs30_m_s: float
    elevation_m: float
    grid_azimuth_deg: float
    grid_jitter_deg: float
    block_m: tuple[float, float]
    street_m: float
    plot_frontage_m: tuple[float, float]
    plot_fill: float
    storey_weights: tuple[float, ...]
    mix: ConstructionMix
    old_town_mix: ConstructionMix
    new_town_mix: ConstructionMix
    damage_range: tuple[float, float]
    incidence_deg: float
    orbit_direction: str
    damage_source: str = field(default='', compare=False)


#: The built-in towns, keyed by slug.
CITIES: dict[str, City] = {
    city.slug: city
    for city in (
        City(
            slug='kahramanmaras',
            name='Kahramanmaraş',
            lon=36.937,
            lat=37.585,
            province_id='TR-46',
            province_name='KAHRAMANMARAŞ',
            ems_aoi=4,
            anchor_pga_g=0.38,
            vs30_m_s=593.0,
            elevation_m=570.0,
            grid_azimuth_deg=22.0,
            grid_jitter_deg=3.0,
            block_m=(110.0, 60.0),
            street_m=14.0,
            plot_frontage_m=(16.0, 24.0),
            plot_fill=0.85,
            # field survey: median 5 storeys, 41 % of surveyed buildings >= 8 storeys
            storey_weights=(4, 6, 7, 9, 12, 11, 8, 9, 7, 5, 3, 2),
            mix=ConstructionMix(0.78, 0.06, 0.14, 0.02, (0.45, 0.38, 0.17)),
            old_town_mix=ConstructionMix(0.55, 0.0, 0.35, 0.10, (0.55, 0.40, 0.05)),
            new_town_mix=ConstructionMix(0.75, 0.20, 0.05, 0.0, (0.10, 0.40, 0.50)),
            damage_range=(0.06, 0.25),
            incidence_deg=38.0,
            orbit_direction='DESCENDING',
            damage_source='Dulkadiroğlu 17 % of inspected heavy+ (Ministry); '
            'province 18.8 % severe+collapse of assessed (StEER)',
        ),
        City(
            slug='antakya',
            name='Antakya',
            lon=36.160,
            lat=36.202,
            province_id='TR-31',
            province_name='HATAY',
            ems_aoi=11,
            anchor_pga_g=0.67,
            vs30_m_s=417.0,
            elevation_m=85.0,
            grid_azimuth_deg=-8.0,
            grid_jitter_deg=14.0,
            block_m=(70.0, 45.0),
            street_m=9.0,
            plot_frontage_m=(11.0, 18.0),
            plot_fill=0.9,
            # survey: mostly 2-6 storeys, mode 5
            storey_weights=(8, 12, 13, 14, 16, 10, 5, 3, 1),
            mix=ConstructionMix(0.68, 0.02, 0.25, 0.03, (0.30, 0.55, 0.15)),
            old_town_mix=ConstructionMix(0.45, 0.0, 0.45, 0.10, (0.55, 0.40, 0.05)),
            new_town_mix=ConstructionMix(0.80, 0.10, 0.10, 0.0, (0.15, 0.50, 0.35)),
            damage_range=(0.12, 0.35),
            incidence_deg=33.0,
            orbit_direction='DESCENDING',
            damage_source='Hatay 20 % severe+collapse of assessed (StEER); Antakya '
            '~7.5 % collapsed, most of the rest to be demolished (NYT)',
        ),
        City(
            slug='nurdagi',
            name='Nurdağı',
            lon=36.737,
            lat=37.176,
            province_id='TR-27',
            province_name='GAZİANTEP',
            ems_aoi=16,
            anchor_pga_g=0.59,
            vs30_m_s=554.0,
            elevation_m=480.0,
            grid_azimuth_deg=48.0,
            grid_jitter_deg=8.0,
            block_m=(80.0, 50.0),
            street_m=10.0,
            plot_frontage_m=(10.0, 16.0),
            plot_fill=0.75,
            # small town: mostly 2-3 storeys, some 4-5
            storey_weights=(18, 26, 22, 14, 10, 4, 2),
            mix=ConstructionMix(0.36, 0.0, 0.56, 0.08, (0.45, 0.45, 0.10)),
            old_town_mix=ConstructionMix(0.20, 0.0, 0.65, 0.15, (0.65, 0.30, 0.05)),
            new_town_mix=ConstructionMix(0.70, 0.05, 0.25, 0.0, (0.20, 0.50, 0.30)),
            damage_range=(0.15, 0.40),
            incidence_deg=41.0,
            orbit_direction='ASCENDING',
            damage_source='"most damaged district" (Ministry, 4,787 heavy+); the '
            'governor ordered the whole town rebuilt',
        ),
        City(
            slug='islahiye',
            name='İslahiye',
            lon=36.631,
            lat=37.026,
            province_id='TR-27',
            province_name='GAZİANTEP',
            ems_aoi=15,
            anchor_pga_g=0.65,
            vs30_m_s=571.0,
            elevation_m=520.0,
            grid_azimuth_deg=-30.0,
            grid_jitter_deg=6.0,
            block_m=(90.0, 55.0),
            street_m=11.0,
            plot_frontage_m=(11.0, 18.0),
            plot_fill=0.8,
            # mostly 2-3 storeys with some 8-storey blocks
            storey_weights=(14, 24, 20, 10, 8, 5, 4, 5, 2),
            mix=ConstructionMix(0.55, 0.03, 0.38, 0.04, (0.40, 0.45, 0.15)),
            old_town_mix=ConstructionMix(0.35, 0.0, 0.55, 0.10, (0.60, 0.35, 0.05)),
            new_town_mix=ConstructionMix(0.75, 0.10, 0.15, 0.0, (0.15, 0.45, 0.40)),
            damage_range=(0.15, 0.42),
            incidence_deg=29.0,
            orbit_direction='DESCENDING',
            damage_source='Nurdağı + İslahiye 1,000 collapsed on imagery (HKMO); '
            '1.29 g recorded at Fevzipaşa, ShakeMap 0.76 g at the survey sites',
        ),
        City(
            slug='adiyaman',
            name='Adıyaman',
            lon=38.276,
            lat=37.764,
            province_id='TR-02',
            province_name='ADIYAMAN',
            ems_aoi=21,
            anchor_pga_g=0.38,
            vs30_m_s=391.0,
            elevation_m=670.0,
            grid_azimuth_deg=12.0,
            grid_jitter_deg=5.0,
            block_m=(100.0, 55.0),
            street_m=12.0,
            plot_frontage_m=(13.0, 22.0),
            plot_fill=0.85,
            storey_weights=(8, 12, 14, 15, 14, 10, 6, 4, 2),
            # city inventory: RC frame 62 %, hollow block 13 %, stone 13 %, adobe 5.7 %
            mix=ConstructionMix(0.62, 0.03, 0.28, 0.06, (0.35, 0.50, 0.15)),
            old_town_mix=ConstructionMix(0.40, 0.0, 0.45, 0.15, (0.60, 0.35, 0.05)),
            new_town_mix=ConstructionMix(0.78, 0.12, 0.10, 0.0, (0.15, 0.50, 0.35)),
            damage_range=(0.06, 0.25),
            incidence_deg=36.0,
            orbit_direction='ASCENDING',
            damage_source='Adıyaman Merkez 3,554 heavy+ of 25,617 (14 %); province '
            '23 % severe+collapse of assessed (StEER)',
        ),
    )
}


def get_city(slug: str) -> City:
    """Return the built-in city with this slug.

    Args:
        slug: lowercase ASCII city name, e.g. ``kahramanmaras``.

    Returns:
        The city.

    Raises:
        KeyError: if there is no such city; the message lists the known slugs.
    """
    try:
        return CITIES[slug]
    except KeyError:
        known = ', '.join(CITIES)
        raise KeyError(f'unknown city {slug!r}; known cities: {known}') from None
