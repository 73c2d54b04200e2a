# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

import csv
import glob
import os
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchgeo_sar_damage.errors import SARDamageError
from torchgeo_sar_damage.taxonomy import (
    OPEN_RANGE_EXTRA_STOREYS,
    StoreyRange,
    Taxonomy,
    TaxonomyError,
    parse_taxonomy,
)

# ----------------------------------------------------------------- hand-written strings

# (string, expected fields, canonical string)
EXAMPLES: list[tuple[str, dict[str, Any], str]] = [
    (
        'CR/LFINF+CDM/HBET:4-7',
        {
            'material': 'CR',
            'llrs': 'LFINF',
            'infill': (),
            'code_level': 'CDM',
            'ductility': None,
            'storeys': StoreyRange(4, 7),
            'occupancy': None,
            'macro_class': 'RC',
            'storeys_mid': 5.5,
        },
        'CR/LFINF+CDM/HBET:4-7',
    ),
    (
        'CR/LFINF(MUR+CBH)+CDL+DUL/H:4/RES',
        {
            'material': 'CR',
            'material_details': (),
            'llrs': 'LFINF',
            'infill': ('MUR', 'CBH'),
            'code_level': 'CDL',
            'ductility': 'DUL',
            'storeys': StoreyRange(4, 4),
            'occupancy': 'RES',
            'macro_class': 'RC',
            'storeys_mid': 4.0,
        },
        'CR/LFINF(MUR+CBH)+CDL+DUL/H:4/RES',
    ),
    (
        'MUR+ADO/LWAL+DNO/H:1/COM',
        {
            'material': 'MUR',
            'material_details': ('ADO',),
            'llrs': 'LWAL',
            'code_level': None,
            'ductility': 'DNO',
            'storeys': StoreyRange(1, 1),
            'occupancy': 'COM',
            'macro_class': 'ADOBE',
        },
        'MUR+ADO/LWAL+DNO/H:1/COM',
    ),
    (
        'CR+PC/LFM+CDL+DUL/H:1/IND',
        {
            'material': 'CR',
            'material_details': ('PC',),
            'llrs': 'LFM',
            'code_level': 'CDL',
            'ductility': 'DUL',
            'occupancy': 'IND',
            'macro_class': 'PRECAST',
        },
        'CR+PC/LFM+CDL+DUL/H:1/IND',
    ),
    (
        'MUR+CBH/LWAL+CDM+DUM/H:2/MIX1',
        {
            'material': 'MUR',
            'material_details': ('CBH',),
            'occupancy': 'MIX1',
            'macro_class': 'URM',
        },
        'MUR+CBH/LWAL+CDM+DUM/H:2/MIX1',
    ),
    (
        'UNK+CDL+DUL/H:UNK/RES',
        {
            'material': 'UNK',
            'llrs': None,
            'code_level': 'CDL',
            'ductility': 'DUL',
            'storeys': None,
            'storeys_unknown': True,
            'storeys_mid': None,
            'occupancy': 'RES',
            'macro_class': 'UNK',
            'is_unknown': False,
        },
        'UNK+CDL+DUL/H:UNK/RES',
    ),
    (
        'UNK+CDM+DUM/HBET:10+/MIX3',
        {
            'material': 'UNK',
            'code_level': 'CDM',
            'ductility': 'DUM',
            'storeys': StoreyRange(10, None),
            'storeys_mid': 10.0 + OPEN_RANGE_EXTRA_STOREYS,
            'occupancy': 'MIX3',
        },
        'UNK+CDM+DUM/HBET:10+/MIX3',
    ),
    (
        'S/LFBR+CDM+DUM/HBET:7-9/COM',
        {
            'material': 'S',
            'llrs': 'LFBR',
            'storeys': StoreyRange(7, 9),
            'macro_class': 'STEEL',
        },
        'S/LFBR+CDM+DUM/HBET:7-9/COM',
    ),
    (
        'W/LFINF(MUR+ST)+DNO/H:2/RES',
        {
            'material': 'W',
            'infill': ('MUR', 'ST'),
            'ductility': 'DNO',
            'macro_class': 'WOOD',
        },
        'W/LFINF(MUR+ST)+DNO/H:2/RES',
    ),
    (
        'MATO/LFM+CDL+DUL/H:3/IND',
        {'material': 'MATO', 'macro_class': 'OTHER'},
        'MATO/LFM+CDL+DUL/H:3/IND',
    ),
    (
        'UNK',
        {
            'material': 'UNK',
            'llrs': None,
            'storeys': None,
            'storeys_unknown': False,
            'occupancy': None,
            'is_unknown': True,
            'macro_class': 'UNK',
        },
        'UNK',
    ),
    # v2.0: HBET:a,b has the upper bound first; HEX exact; HAPP approximate; DUC ductile
    (
        'CR/LFM+DUC/HBET:3,1',
        {'ductility': 'DUC', 'storeys': StoreyRange(1, 3)},
        'CR/LFM+DUC/HBET:1-3',
    ),
    ('MUR/LWAL/HEX:2', {'storeys': StoreyRange(2, 2)}, 'MUR/LWAL/H:2'),
    (
        'MUR/HAPP:3',
        {'storeys': StoreyRange(3, 3, approximate=True), 'storeys_mid': 3.0},
        'MUR/HAPP:3',
    ),
    (
        'MAT99/L99/H99',
        {'material': 'UNK', 'llrs': None, 'storeys_unknown': True},
        'UNK/H:UNK',
    ),
    # v3 forms
    ('CR/LWAL/H:4-7', {'storeys': StoreyRange(4, 7)}, 'CR/LWAL/HBET:4-7'),
    ('CR/H:<5', {'storeys': StoreyRange(None, 4), 'storeys_mid': 2.5}, 'CR/H:<5'),
    ('CR/H:>3', {'storeys': StoreyRange(4, None), 'storeys_mid': 6.0}, 'CR/HBET:4+'),
    ('CR/H:UNK', {'storeys': None, 'storeys_unknown': True}, 'CR/H:UNK'),
    # attributes are identified by their atoms, not their position
    (
        'RES/H:2/LFINF(MUR+CL)+CDM+DUM/CR',
        {
            'material': 'CR',
            'llrs': 'LFINF',
            'infill': ('MUR', 'CL'),
            'occupancy': 'RES',
        },
        'CR/LFINF(MUR+CL)+CDM+DUM/H:2/RES',
    ),
    # atoms in canonical order; attributes that are not modelled are kept
    (
        'CR+MOC+CBH/LFM+DUC+LFC:10/HHT:7.5+HEX:2/YMG+YBET:1990-2000/RES2A/FOSSL/RSH1+RC2',
        {
            'material_details': ('CBH', 'MOC'),
            'llrs_details': ('LFC:10',),
            'height_details': ('HHT:7.5',),
            'date': 'YBET:1990-2000+YMG',
            'occupancy': 'RES2A',
            'extra': ('RSH1+RC2', 'FOSSL'),
        },
        'CR+CBH+MOC/LFM+DUC+LFC:10/H:2+HHT:7.5/YBET:1990-2000+YMG/RES2A/RSH1+RC2/FOSSL',
    ),
    ('CDL+DUL/H:3', {'material': None, 'code_level': 'CDL'}, 'CDL+DUL/H:3'),
    (
        'C99+CT99/LFINF(MUR+CL99)/HBBET:3,1',
        {'material': 'C', 'infill': ('MUR',), 'height_details': ('HBBET:3,1',)},
        'C/LFINF(MUR)/HBBET:3,1',
    ),
]


@pytest.mark.parametrize(
    ('text', 'expected', 'canonical'), EXAMPLES, ids=[e[0] for e in EXAMPLES]
)
def test_examples(text: str, expected: dict[str, Any], canonical: str) -> None:
    tax = parse_taxonomy(text)
    for name, value in expected.items():
        assert getattr(tax, name) == value, name
    assert tax.text == text
    assert tax.format() == canonical
    assert str(tax) == canonical
    assert parse_taxonomy(canonical) == tax


def test_equality_ignores_text() -> None:
    a = parse_taxonomy('CR/HBET:3,1')
    b = parse_taxonomy('CR/HBET:1-3')
    assert a == b
    assert a.text != b.text
    assert hash(a) == hash(b)


@pytest.mark.parametrize(
    ('material', 'details', 'macro'),
    [
        ('CR', (), 'RC'),
        ('C', (), 'RC'),
        ('SRC', (), 'RC'),
        ('CR', ('PCPS',), 'PRECAST'),
        ('MUR', ('CLBRS',), 'URM'),
        ('M', (), 'URM'),
        ('MUR', ('ADO',), 'ADOBE'),
        ('EU', (), 'ADOBE'),
        ('S', (), 'STEEL'),
        ('W', ('WLI',), 'WOOD'),
        ('MCF', (), 'OTHER'),
        ('CU', (), 'OTHER'),
        ('MATO', (), 'OTHER'),
        ('UNK', (), 'UNK'),
    ],
)
def test_macro_class(material: str, details: tuple[str, ...], macro: str) -> None:
    assert Taxonomy(material=material, material_details=details).macro_class == macro


def test_no_material_is_unknown() -> None:
    tax = Taxonomy(occupancy='RES')
    assert tax.macro_class == 'UNK'
    assert tax.is_unknown
    assert not Taxonomy(material='UNK', storeys=StoreyRange(2, 2)).is_unknown


def test_parse_is_cached() -> None:
    assert parse_taxonomy('CR/LFM/H:2') is parse_taxonomy('CR/LFM/H:2')


# ----------------------------------------------------------------- malformed strings

MALFORMED = [
    ('', 0, 'empty string'),
    ('CR//H:3', 3, 'empty attribute'),
    ('CR/H:3/', 7, 'empty attribute'),
    ('/CR', 0, 'empty attribute'),
    ('CR/LFINF(MUR+CBH/H:3', 8, "'(' is not closed"),
    ('CR/LFINF(MUR+CBH', 8, "'(' is not closed"),
    ('CR/LFM)/H:3', 6, "')' without '('"),
    ('CR/LFINF()', 9, 'empty attribute'),
    ('CR/XYZ/H:3', 3, "unknown atom 'XYZ'"),
    ('CR/LFINF(MUR+FOO)', 13, "unknown atom 'FOO'"),
    ('DX/CR', 0, 'direction'),
    ('CR/H:abc', 5, 'H:abc'),
    ('CR/HEX:2.5', 7, 'whole number'),
    ('CR/HBET:9-7', 8, 'min > max'),
    ('CR/HBET:1,3', 8, 'min > max'),
    ('CR/HBET:4', 8, 'range'),
    ('CR/H:<0', 5, 'fewer than 0'),
    ('CR/YBET:2000-1990', 8, 'min > max'),
    ('CR/HHT:tall', 7, 'expected a number'),
    ('CR/H:', 5, 'empty parameter'),
    ('CR/H', 4, 'needs a parameter'),
    ('CR/H:4:5', 6, 'one parameter'),
    ('CR:3', 2, 'takes no parameter'),
    ('CR+', 3, 'empty atom'),
    ('CR++PC', 3, 'empty atom'),
    ('cr/lfm', 0, 'upper-case'),
    ('CR/ H:3', 3, "found ' '"),
    ('CR/UNK', 3, 'material attribute given twice'),
    ('CR/LFM/S', 7, 'material attribute given twice'),
    ('CR+S/LFM', 3, 'two material types'),
    ('CR/LFM+LWAL', 7, 'two LLRS types'),
    ('CR/LFM+CDL+CDM', 11, 'two code levels'),
    ('CR/H:2+HBET:1-3', 7, 'two numbers of storeys'),
    ('CR/RES+COM', 7, 'two occupancy classes'),
    ('CR+LFM', 3, "separate attributes with '/'"),
    ('LFM+CR', 4, "separate attributes with '/'"),
    ('CR/H:3+RES', 7, "separate attributes with '/'"),
    ('UNK+CDL+PC', 8, 'after llrs'),
    ('CR/LFM(MUR)', 6, 'takes no arguments'),
    ('CR/LFINF(MUR;CL)', 8, 'one infill argument'),
    ('CR/LFINF(LFM)', 9, 'not a material'),
    ('CR/LFINF(MUR+CR)', 13, 'two infill material types'),
    ('CR/IRPP:SOS', 8, 'not a plan irregularity'),
    ('L99', 0, 'nothing is known'),
    ('CR/L99:2', 6, 'takes nothing'),
    ('CR/HBBET:1,3', 9, 'min > max'),
]


@pytest.mark.parametrize(
    ('text', 'position', 'problem'), MALFORMED, ids=[repr(m[0]) for m in MALFORMED]
)
def test_malformed(text: str, position: int, problem: str) -> None:
    with pytest.raises(TaxonomyError, match=re.escape(problem)) as info:
        parse_taxonomy(text)
    error = info.value
    assert error.position == position
    assert error.text == text
    assert repr(text) in str(error)
    assert f'position {position}' in str(error)
    assert isinstance(error, ValueError)
    assert isinstance(error, SARDamageError)


@pytest.mark.parametrize(
    'kwargs',
    [
        {'material': 'LFM'},
        {'material': 'CR', 'material_details': ('CDL',)},
        {'llrs': 'CR'},
        {'code_level': 'DUL'},
        {'ductility': 'CDL'},
        {'occupancy': 'CR'},
        {'llrs': 'LFM', 'infill': ('MUR',)},
        {'llrs': 'LFINF', 'infill': ('MUR', 'CR')},
        {'llrs': 'LFM', 'llrs_details': ('DNO',)},
        {'material': 'CR', 'height_details': ('H:3',)},
        {'storeys': StoreyRange(1, 1), 'storeys_unknown': True},
        {},
    ],
)
def test_invalid_taxonomy(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match='Taxonomy'):
        Taxonomy(**kwargs)


@pytest.mark.parametrize(
    ('low', 'high', 'approximate'),
    [(None, None, False), (-1, 2, False), (5, 4, False), (1, 2, True), (3, None, True)],
)
def test_invalid_storey_range(
    low: int | None, high: int | None, approximate: bool
) -> None:
    with pytest.raises(ValueError, match=r'StoreyRange|storeys|approximate'):
        StoreyRange(low, high, approximate)


def test_storey_range() -> None:
    assert StoreyRange(4, 4).exact
    assert not StoreyRange(4, 7).exact
    assert not StoreyRange(None, 4).exact
    assert StoreyRange(None, 0).mid == 0.0
    assert StoreyRange(None, 0).format() == 'H:<1'


# ----------------------------------------------------------------- property tests

MATERIALS = [
    'UNK',
    'C',
    'CU',
    'CR',
    'SRC',
    'S',
    'ME',
    'M',
    'MUR',
    'MCF',
    'MR',
    'E',
    'EU',
]
MATERIALS += ['ER', 'W', 'INF', 'MATO']
# one list per group of material details; a building takes at most one of each
MATERIAL_DETAILS = [
    ['CIP', 'PC', 'CIPPS', 'PCPS'],
    ['SL', 'SR', 'SO'],
    ['ADO', 'ST', 'STRUB', 'STDRE'],
    ['CL', 'CLBRS', 'CLBRH', 'CLBLH', 'CB', 'CBS', 'CBH', 'MO'],
    ['WHE', 'WLI', 'WS', 'WWD', 'WBB', 'WO'],
    ['MON', 'MOM', 'MOL', 'MOC', 'MOCL'],
    ['RS', 'RW', 'RB', 'RCM', 'RCB'],
]
LLRS = [
    'LN',
    'LFM',
    'LFINF',
    'LFBR',
    'LPB',
    'LWAL',
    'LDUAL',
    'LFLS',
    'LFLSINF',
    'LH',
    'LO',
]
CODE_LEVELS = ['CDN', 'CDL', 'CDM', 'CDH']
DUCTILITIES = ['DNO', 'DUL', 'DUM', 'DUH', 'DBD', 'DUC']
OCCUPANCIES = ['RES', 'RES1', 'RES2A', 'COM', 'COM10', 'IND', 'IND2', 'MIX1', 'MIX2']
OCCUPANCIES += ['MIX3', 'AGR1', 'ASS', 'GOV2', 'EDU3', 'OCO']
DATES = ['Y:1975', 'YBET:1980-1999', 'YPRE:1999+YMP', 'YAPP:1960', 'YMG']
EXTRA = ['PLFR+BPD', 'IRIR+IRVP:SOS', 'EWMA', 'RSH2+RMT1', 'FC2', 'FOSN']


def optional[T](strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.none() | strategy


@st.composite
def details(draw: st.DrawFn) -> tuple[str, ...]:
    groups = draw(st.lists(st.sampled_from(MATERIAL_DETAILS), max_size=3, unique_by=id))
    return tuple(draw(st.sampled_from(group)) for group in groups)


@st.composite
def storey_ranges(draw: st.DrawFn) -> StoreyRange:
    low = draw(st.integers(0, 60))
    kind = draw(st.sampled_from(['exact', 'approximate', 'range', 'open', 'below']))
    if kind == 'range':
        return StoreyRange(low, low + draw(st.integers(1, 20)))
    if kind == 'open':
        return StoreyRange(low, None)
    if kind == 'below':
        return StoreyRange(None, low)
    return StoreyRange(low, low, approximate=kind == 'approximate')


@st.composite
def taxonomies(draw: st.DrawFn) -> Taxonomy:
    material = draw(optional(st.sampled_from(MATERIALS)))
    llrs = draw(optional(st.sampled_from(LLRS)))
    infill: tuple[str, ...] = ()
    if llrs in ('LFINF', 'LFLSINF') and draw(st.booleans()):
        infill = (draw(st.sampled_from(['MUR', 'MR', 'MCF'])), *draw(details()))
    storeys = draw(optional(storey_ranges()))
    extra = draw(st.lists(st.sampled_from(EXTRA), unique=True, max_size=3))
    fields: dict[str, Any] = {
        'material': material,
        'material_details': draw(details()),
        'llrs': llrs,
        'infill': infill,
        'code_level': draw(optional(st.sampled_from(CODE_LEVELS))),
        'ductility': draw(optional(st.sampled_from(DUCTILITIES))),
        'llrs_details': draw(st.sampled_from([(), ('LFC:12.5',), ('DCW:0.1',)])),
        'storeys': storeys,
        'storeys_unknown': storeys is None and draw(st.booleans()),
        'height_details': draw(st.sampled_from([(), ('HHT:22.5',), ('HB:1', 'HD:5')])),
        'date': draw(optional(st.sampled_from(DATES))),
        'occupancy': draw(optional(st.sampled_from(OCCUPANCIES))),
        'extra': tuple(e for e in EXTRA if e in extra),
    }
    if not any(fields.values()):
        fields['material'] = 'UNK'
    return Taxonomy(**fields)


@given(taxonomies())
def test_format_round_trip(tax: Taxonomy) -> None:
    text = tax.format()
    parsed = parse_taxonomy(text)
    assert parsed == tax
    assert parsed.format() == text


def _storey_variants(storeys: StoreyRange) -> list[str]:
    """Every spelling of the same number of storeys."""
    low, high = storeys.min, storeys.max
    if storeys.approximate:
        return [f'HAPP:{low}']
    if high is None:
        assert low is not None
        variants = [f'HBET:{low}+', f'H:{low}+']
        return [*variants, f'H:>{low - 1}'] if low > 0 else variants
    if low is None:
        return [f'H:<{high + 1}']
    if low == high:
        return [f'H:{low}', f'HEX:{low}', f'H:{low:03d}']
    return [f'HBET:{low}-{high}', f'H:{low}-{high}', f'HBET:{high},{low}']


@st.composite
def spellings(draw: st.DrawFn) -> tuple[Taxonomy, str]:
    """A taxonomy and a valid, usually non-canonical, string for it."""
    tax = draw(taxonomies())
    material = [tax.material] if tax.material else []
    material += tax.material_details
    llrs: list[str] = []
    if tax.llrs is not None:
        llrs.append(
            tax.llrs
            + (f'({"+".join(draw(st.permutations(tax.infill)))})' if tax.infill else '')
        )
    llrs += [a for a in (tax.code_level, tax.ductility) if a is not None]
    llrs += tax.llrs_details
    material = draw(st.permutations(material))
    llrs = draw(st.permutations(llrs))
    attributes: list[list[str]] = []
    if tax.llrs is None and material and llrs and draw(st.booleans()):
        attributes.append(material + llrs)  # the Türkiye dialect: UNK+CDL+DUL
    else:
        attributes += [material, llrs]
    height = list(tax.height_details)
    if tax.storeys is not None:
        height.append(draw(st.sampled_from(_storey_variants(tax.storeys))))
    if tax.storeys_unknown:
        height.append(draw(st.sampled_from(['H:UNK', 'H99'])))
    attributes.append(draw(st.permutations(height)))
    if tax.date:
        attributes.append(draw(st.permutations(tax.date.split('+'))))
    attributes.append([tax.occupancy] if tax.occupancy else [])
    attributes += [draw(st.permutations(e.split('+'))) for e in tax.extra]
    order = draw(st.permutations([a for a in attributes if a]))
    return tax, '/'.join('+'.join(a) for a in order)


@given(spellings())
def test_canonicalisation_is_idempotent(case: tuple[Taxonomy, str]) -> None:
    tax, text = case
    parsed = parse_taxonomy(text)
    assert parsed == tax
    canonical = parsed.format()
    assert parse_taxonomy(canonical) == parsed
    assert parse_taxonomy(canonical).format() == canonical


@settings(max_examples=200)
@given(st.text(alphabet='CRUNKLFIM+/():;-,<>HBET0123456789', max_size=30))
def test_random_text_parses_or_raises_taxonomy_error(text: str) -> None:
    error: TaxonomyError | None = None
    try:
        tax = parse_taxonomy(text)
    except TaxonomyError as caught:
        error = caught
    if error is None:
        assert parse_taxonomy(tax.format()) == tax
    else:
        assert 0 <= error.position <= len(text)
        assert error.text == text


# ----------------------------------------------------------------- GEM's Türkiye exposure


def test_all_turkey_exposure_strings() -> None:
    """Every distinct taxonomy of GEM's Türkiye exposure (v2023.1.1) parses and round-trips.

    Set GEM_EXPOSURE_DIR to a folder with ``Exposure_{Res,Com,Ind}_Turkey_Adm1.csv`` from
    ``gem/global_exposure_model`` (``Europe/Turkey``) to run it.
    """
    root = os.environ.get('GEM_EXPOSURE_DIR')
    if not root:
        pytest.skip(
            'GEM_EXPOSURE_DIR is not set (folder with GEM Exposure_*_Turkey_Adm1.csv files)'
        )
    paths = sorted(glob.glob(os.path.join(root, 'Exposure_*_Turkey_Adm1.csv')))
    assert paths, f'no Exposure_*_Turkey_Adm1.csv in GEM_EXPOSURE_DIR={root}'
    strings: set[str] = set()
    for path in paths:
        with open(path, newline='', encoding='utf-8') as f:
            strings.update(row['TAXONOMY'] for row in csv.DictReader(f))
    assert len(strings) == 1783
    for text in sorted(strings):
        tax = parse_taxonomy(text)
        assert tax.format() == text  # GEM's strings are already canonical
        assert parse_taxonomy(tax.format()) == tax
        assert tax.material is not None
        assert tax.occupancy in ('RES', 'COM', 'IND', 'MIX1', 'MIX2', 'MIX3')
