# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""GEM Building Taxonomy strings: parser, typed model and canonical writer.

GEM's exposure files describe each building class by a GEM Building Taxonomy string such
as ``CR/LFINF(MUR+CL)+CDM+DUM/H:6/RES``. :func:`parse_taxonomy` reads one into a frozen
:class:`Taxonomy`; :meth:`Taxonomy.format` writes it back.

Grammar (GEM's validator ``gem/oq-gem-taxonomy``, ``openquake/gem_taxonomy/classes.py``)::

    taxo        = "UNK" / ( attr ( "/" attr )* )
    attr        = atom ( "+" atom )*
    atom        = [A-Z][A-Z0-9]*  atom_args*  atom_params*
    atom_args   = "(" attr ( ";" attr )* ")"
    atom_params = ":" [A-Za-z0-9<>-][A-Za-z0-9.-]*

``/`` separates attributes, ``+`` the atoms of one attribute (outside parentheses), ``:``
introduces an atom's parameter, ``-`` a range inside a parameter, and parentheses hold an
atom's arguments (``;`` between several). An attribute is identified by its atoms, not by
its position, so attributes may come in any order; :meth:`Taxonomy.format` writes them in
the canonical order of ``json/taxonomy3.3_standard.json`` (``gem/gem_taxonomy``): material,
LLRS, height, date, occupancy, shape, irregularity, hydrodynamics, exterior walls, roof,
floor, foundation, fire protection.

The atoms are those of the v3.2 tables (``other_versions/Taxonomy_tables_v3.2.xlsx``), which
GEM's global exposure model says it follows, plus the older v2.0 forms
(``other_versions/Taxonomy_tables_v2.0.xlsx``) and the dialect of GEM's Türkiye exposure
files (``gem/global_exposure_model``, ``Europe/Turkey``):

* Storeys: ``H:4`` (exact), ``HBET:7-9`` (range, lower bound first as the exposure writes
  it), ``HBET:10+`` (10 or more), v3.3 ``H:4-7``, ``H:<5``, ``H:>3``, ``H:UNK``; v2.0
  ``HBET:3,1`` (upper bound first: 1 to 3 storeys), ``HEX:2`` (exact), ``HAPP:2``
  (approximate), ``H99`` (unknown).
* ``UNK`` is an atom of the material attribute (material unknown); the whole string
  ``UNK`` therefore reads as ``Taxonomy(material='UNK')``. Other unknown attributes are
  left out, as GEM does, except the height which may say ``H:UNK``.
* Code level and ductility may follow the material when no LLRS type is known, as in the
  Türkiye strings ``UNK+CDL+DUL/H:3/RES``; :meth:`Taxonomy.format` writes them that way.
* ``DUC`` (v2.0 "ductile") is kept as a ductility of its own.
* The v2.0 "unknown" codes ``MAT99``, ``C99``, ``M99`` and ``E99`` become ``UNK``, ``C``,
  ``M`` and ``E``; the v2.0 unknown-detail codes (``L99``, ``DU99``, ``CT99``, ``S99``,
  ``ME99``, ``MUN99``, ``ST99``, ``CL99``, ``CB99``, ``MO99``, ``SP99``, ``MR99``,
  ``SC99``, ``ET99``, ``W99``, ``Y99``, ``OC99``) say nothing and are dropped; ``RES99``
  and the like become the general class (``RES``).

Not supported (they raise :class:`TaxonomyError`): direction-specific strings (``DX``,
``DY``), and arguments on any atom other than ``LFINF``/``LFLSINF`` (the v3.3 hybrid atoms
``HYB``, ``MDD``, ``LHV``, ``LHP``, ``LDD`` and ``IRP``/``IRV``).

.. versionadded:: 0.1
"""

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import SARDamageError

__all__ = [
    'OPEN_RANGE_EXTRA_STOREYS',
    'StoreyRange',
    'Taxonomy',
    'TaxonomyError',
    'parse_taxonomy',
]

#: Storeys added to the lower bound of an open range (``HBET:10+``, ``H:>9``) to get
#: :attr:`StoreyRange.mid` (so ``HBET:10+`` has midpoint 12).
OPEN_RANGE_EXTRA_STOREYS = 2


class TaxonomyError(SARDamageError, ValueError):
    """A GEM Building Taxonomy string is malformed or uses an unknown atom.

    Attributes:
        text: the string at fault.
        position: 0-based index in :attr:`text` of the malformed part.
        problem: what is wrong there.
    """

    def __init__(self, text: str, position: int, problem: str) -> None:
        """Initialise a new TaxonomyError.

        Args:
            text: the string at fault.
            position: 0-based index of the malformed part in ``text``.
            problem: what is wrong there and, where possible, what to write instead.
        """
        self.text = text
        self.position = position
        self.problem = problem
        super().__init__(
            f'GEM taxonomy string {text!r}, position {position}: {problem}'
        )


# --------------------------------------------------------------------------- vocabulary

# Attributes in GEM's canonical order (taxonomy3.3_standard.json "Attribute" prog).
_ATTRIBUTE_ORDER = (
    'material',
    'llrs',
    'height',
    'date',
    'occupancy',
    'shape',
    'irregularity',
    'hydrodynamics',
    'ext_walls',
    'roof',
    'floor',
    'foundation',
    'fire_prot',
)


# (attribute, group, atoms): v3.2 tables 2-14 with v2.0 additions. The order of the
# groups is the canonical order of the atoms inside an attribute.
_GROUPS: tuple[tuple[str, str, str], ...] = (
    ('material', 'type', 'UNK C CU CR SRC S ME M MUR MCF MR E EU ER W INF MATO'),
    ('material', 'concrete_technology', 'CIP PC CIPPS PCPS'),
    ('material', 'steel_technology', 'SL SR SO'),
    ('material', 'metal_technology', 'MEIR MEO'),
    ('material', 'masonry_technology', 'ADO ST STRUB STDRE'),
    ('material', 'masonry_unit', 'CL CLBRS CLBRH CLBLH CB CBS CBH MO'),
    ('material', 'earth_technology', 'ETR ETC ETO'),
    ('material', 'wood_technology', 'WHE WLI WS WWD WBB WO'),
    ('material', 'mortar', 'MON MOM MOL MOC MOCL'),
    ('material', 'stone', 'SPLI SPSA SPTU SPSL SPGR SPBA SPO'),
    ('material', 'masonry_reinforcement', 'RS RW RB RCM RCB'),
    ('material', 'steel_connection', 'WEL RIV BOL'),
    ('llrs', 'type', 'LN LFM LFINF LFBR LPB LWAL LDUAL LFLS LFLSINF LH LO'),
    ('llrs', 'code_level', 'CDN CDL CDM CDH'),
    ('llrs', 'lateral_coefficient', 'LFC'),
    ('llrs', 'ductility', 'DNO DUL DUM DUH DBD DUC'),
    ('llrs', 'column_wall_density', 'DCW'),
    ('height', 'storeys', 'H HBET HEX HAPP H99'),
    ('height', 'height_m', 'HHT HHI'),
    ('height', 'storeys_below', 'HB HBEX HBBET HBAPP'),
    ('height', 'ground_floor_m', 'HF HFEX HFBET HFAPP'),
    ('height', 'slope_deg', 'HD'),
    ('date', 'year', 'Y YEX YBET YPRE YAPP'),
    ('date', 'condition', 'YMP YMM YMG'),
    (
        'occupancy',
        'class',
        (
            'RES RES1 RES2 RES2A RES2B RES2C RES2D RES2E RES2F RES3 RES4 RES5 RES6 '
            'COM COM1 COM2 COM3 COM4 COM5 COM6 COM7 COM8 COM9 COM10 COM11 '
            'MIX MIX1 MIX2 MIX3 MIX4 MIX5 MIX6 IND IND1 IND2 AGR AGR1 AGR2 AGR3 '
            'ASS ASS1 ASS2 ASS3 ASS4 GOV GOV1 GOV2 EDU EDU1 EDU2 EDU3 EDU4 '
            'HEA TRT NONRES OCO'
        ),
    ),
    (
        'shape',
        'plan',
        (
            'PLFSQ PLFSQO PLFR PLFRO PLFL PLFA PLFB PLFC PLFCO PLFD PLFDO PLFE PLFF PLFH '
            'PLFS PLFT PLFU PLFX PLFY PLFI'
        ),
    ),
    ('shape', 'position', 'BPD BP1 BP2 BP3'),
    ('irregularity', 'regular', 'IRRE IRIR IRR IRI'),
    ('irregularity', 'kind', 'IRPP IRPS IRVP IRVS'),
    ('irregularity', 'plan', 'IRN TOR REC OFS IRHO'),
    ('irregularity', 'vertical', 'SOS CRW SHC POP SET CHV IRVO'),
    ('hydrodynamics', 'ground_floor', 'GFO GFH GFM GFN'),
    ('ext_walls', 'material', 'EWC EWG EWE EWMA EWME EWV EWW EWSL EWPL EWCB EWO'),
    ('ext_walls', 'openings', 'WOL WOM WOS WON'),
    ('ext_walls', 'windows', 'PRO PNO'),
    ('roof', 'shape', 'RSH1 RSH2 RSH3 RSH4 RSH5 RSH6 RSH7 RSH8 RSH9 RSHO'),
    (
        'roof',
        'covering',
        'RMN RMT1 RMT2 RMT3 RMT4 RMT5 RMT6 RMT7 RMT8 RMT9 RMT10 RMT11 RMTO',
    ),
    (
        'roof',
        'system',
        (
            'RM RM1 RM2 RM3 RE RE1 RC RC1 RC2 RC3 RC4 RME RME1 RME2 RME3 '
            'RWO RWO1 RWO2 RWO3 RWO4 RWO5 RFA RFA1 RFAO RO'
        ),
    ),
    ('roof', 'connections', 'RWCN RWCP RTDN RTDP'),
    ('floor', 'material', 'FN FM FE FC FME FW FO'),
    ('floor', 'system', 'FM1 FM2 FM3 FC1 FC2 FC3 FC4 FME1 FME2 FME3 FW1 FW2 FW3 FW4'),
    ('floor', 'connections', 'FWCN FWCP'),
    ('foundation', 'system', 'FOSSL FOSN FOSDL FOSDN FOSO'),
    ('fire_prot', 'protection', 'FIP FIN'),
)


@dataclass(frozen=True)
class _AtomInfo:
    attribute: str
    group: str
    rank: int  # canonical order of the atom inside its attribute


def _build_vocabulary() -> dict[str, _AtomInfo]:
    vocabulary: dict[str, _AtomInfo] = {}
    for rank, (attribute, group, atoms) in enumerate(_GROUPS):
        for atom in atoms.split():
            if atom in vocabulary:  # pragma: no cover - guards the table above
                raise AssertionError(f'atom {atom} listed twice')
            vocabulary[atom] = _AtomInfo(attribute, group, rank)
    return vocabulary


_VOCABULARY = _build_vocabulary()

# v2.0 codes read as another atom; None drops the atom (it only says "unknown").
_ALIASES: dict[str, str | None] = {
    'MAT99': 'UNK',
    'C99': 'C',
    'M99': 'M',
    'E99': 'E',
    'RES99': 'RES',
    'COM99': 'COM',
    'MIX99': 'MIX',
    'IND99': 'IND',
    'AGR99': 'AGR',
    'ASS99': 'ASS',
    'GOV99': 'GOV',
    'EDU99': 'EDU',
}
_UNKNOWN_CODES = (
    'L99 DU99 CT99 S99 ME99 MUN99 ST99 CL99 CB99 MO99 SP99 MR99 SC99 ET99 W99'
)
_ALIASES.update(dict.fromkeys([*_UNKNOWN_CODES.split(), 'Y99', 'OC99']))

# Atoms that take exactly one parameter, and the kind of value it holds.
_PARAMETER_KINDS = {
    'H': 'storeys',
    'HBET': 'storeys',
    'HEX': 'storeys',
    'HAPP': 'storeys',
    'HHT': 'float',
    'HHI': 'float',
    'HB': 'int_range',
    'HBEX': 'int',
    'HBBET': 'int_range',
    'HBAPP': 'int',
    'HF': 'float_range',
    'HFEX': 'float',
    'HFBET': 'float_range',
    'HFAPP': 'float',
    'HD': 'float',
    'Y': 'int_range',
    'YEX': 'int',
    'YBET': 'int_range',
    'YPRE': 'int',
    'YAPP': 'int',
    'LFC': 'float',
    'DCW': 'float',
    'IRPP': 'plan_irregularity',
    'IRPS': 'plan_irregularity',
    'IRVP': 'vertical_irregularity',
    'IRVS': 'vertical_irregularity',
}

# Atoms that take one argument: the infill material of an infilled frame or slab.
_INFILLED = ('LFINF', 'LFLSINF')


def _atoms_of(attribute: str, group: str | None = None) -> frozenset[str]:
    return frozenset(
        atom
        for atom, info in _VOCABULARY.items()
        if info.attribute == attribute and group in (None, info.group)
    )


_MATERIAL_TYPES = _atoms_of('material', 'type')
_LLRS_TYPES = _atoms_of('llrs', 'type')
_CODE_LEVELS = _atoms_of('llrs', 'code_level')
_DUCTILITIES = _atoms_of('llrs', 'ductility')
_OCCUPANCIES = _atoms_of('occupancy')

_INT = r'\d+'
_FLOAT = r'\d+(?:\.\d+)?'
_UNIT_RE = re.compile(r'[A-Za-z0-9.,<>-]')
_ATOM_RE = re.compile(r'[A-Z][A-Z0-9]*')


# --------------------------------------------------------------------------- storeys


@dataclass(frozen=True)
class StoreyRange:
    """Number of storeys above ground, exact or as a range.

    ``min`` and ``max`` are inclusive; ``None`` leaves that side open: ``H:4`` is
    ``StoreyRange(4, 4)``, ``HBET:7-9`` is ``StoreyRange(7, 9)``, ``HBET:10+`` and
    ``H:>9`` are ``StoreyRange(10, None)``, ``H:<5`` is ``StoreyRange(None, 4)``.

    Attributes:
        min: the least number of storeys, or None when unbounded below.
        max: the greatest number of storeys, or None for an open range.
        approximate: True for an approximate count (``HAPP:n``, exact ranges only).
    """

    min: int | None
    max: int | None
    approximate: bool = False

    def __post_init__(self) -> None:
        """Check that the range is not empty.

        Raises:
            ValueError: if both bounds are None, a bound is negative, ``min > max`` or an
                approximate count is not exact.
        """
        if self.min is None and self.max is None:
            raise ValueError(
                'StoreyRange needs at least one bound; use storeys_unknown'
            )
        if (self.min is not None and self.min < 0) or (
            self.max is not None and self.max < 0
        ):
            raise ValueError(f'negative number of storeys in {self!r}')
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(
                f'StoreyRange min {self.min} is greater than max {self.max}'
            )
        if self.approximate and not self.exact:
            raise ValueError(
                'only an exact number of storeys can be approximate (HAPP:n)'
            )

    @property
    def exact(self) -> bool:
        """True when the range holds one number of storeys (``H:n``, ``HAPP:n``)."""
        return self.min is not None and self.min == self.max

    @property
    def mid(self) -> float:
        """Midpoint of the range.

        An open range ``n+`` gives ``n + OPEN_RANGE_EXTRA_STOREYS``; a range unbounded below
        (``H:<n``) starts at 1 storey.
        """
        if self.max is None:
            assert self.min is not None
            return float(self.min + OPEN_RANGE_EXTRA_STOREYS)
        low = self.min if self.min is not None else min(1, self.max)
        return (low + self.max) / 2

    def format(self) -> str:
        """Write the height atom in the exposure dialect.

        Returns:
            ``H:n``, ``HAPP:n``, ``HBET:a-b``, ``HBET:a+`` or ``H:<n``.
        """
        if self.max is None:
            return f'HBET:{self.min}+'
        if self.min is None:
            return f'H:<{self.max + 1}'
        if self.exact:
            return f'{"HAPP" if self.approximate else "H"}:{self.min}'
        return f'HBET:{self.min}-{self.max}'


# --------------------------------------------------------------------------- model


@dataclass(frozen=True, kw_only=True)
class Taxonomy:
    """A parsed GEM Building Taxonomy string.

    Two taxonomies are equal when every field but :attr:`text` is equal, so
    ``parse_taxonomy(t.format()) == t`` for every valid ``t``.

    Attributes:
        material: material type of the LLRS (``'CR'``, ``'MUR'``, ``'S'``, ``'W'``,
            ``'MATO'``, ``'UNK'``...), None if the string has no material attribute.
        material_details: the other material atoms in canonical order: technology
            (``'PC'``), masonry unit (``'CBH'``), mortar, stone, reinforcement...
        llrs: type of lateral load-resisting system (``'LFINF'``, ``'LFM'``, ``'LWAL'``,
            ``'LFBR'``, ``'LDUAL'``...), None if not given.
        infill: atoms of the infill material argument of ``LFINF(...)`` or
            ``LFLSINF(...)``, for example ``('MUR', 'CBH')``; empty if none.
        code_level: seismic code level ``'CDN'``, ``'CDL'``, ``'CDM'`` or ``'CDH'``, None
            if not given (``DNO`` alone does not imply one).
        ductility: ``'DNO'``, ``'DUL'``, ``'DUM'``, ``'DUH'``, ``'DBD'`` or v2.0 ``'DUC'``.
        llrs_details: other LLRS atoms as written, e.g. ``('LFC:10', 'DCW:0.2')``.
        storeys: number of storeys above ground, None if not given or unknown.
        storeys_unknown: True when the string says the height is unknown (``H:UNK``).
        height_details: other height atoms as written, e.g. ``('HHT:22.5',)``.
        date: the date attribute as written, e.g. ``'YBET:1980-2000+YMG'``.
        occupancy: occupancy class (``'RES'``, ``'COM'``, ``'IND'``, ``'MIX1'``,
            ``'RES2A'``...), None if not given.
        extra: the other attributes (shape, irregularity, hydrodynamics, exterior walls,
            roof, floor, foundation, fire protection), canonical, in canonical order.
        text: the string this was parsed from (not compared).
    """

    material: str | None = None
    material_details: tuple[str, ...] = ()
    llrs: str | None = None
    infill: tuple[str, ...] = ()
    code_level: str | None = None
    ductility: str | None = None
    llrs_details: tuple[str, ...] = ()
    storeys: StoreyRange | None = None
    storeys_unknown: bool = False
    height_details: tuple[str, ...] = ()
    date: str | None = None
    occupancy: str | None = None
    extra: tuple[str, ...] = ()
    text: str = field(default='', compare=False)

    def __post_init__(self) -> None:
        """Check that the fields hold atoms of the right attribute.

        Raises:
            ValueError: if a field holds an atom it cannot hold, or nothing is set.
        """
        checks: list[tuple[str, Iterable[str], frozenset[str]]] = [
            ('material', [self.material] if self.material else [], _MATERIAL_TYPES),
            ('llrs', [self.llrs] if self.llrs else [], _LLRS_TYPES),
            ('code_level', [self.code_level] if self.code_level else [], _CODE_LEVELS),
            ('ductility', [self.ductility] if self.ductility else [], _DUCTILITIES),
            ('occupancy', [self.occupancy] if self.occupancy else [], _OCCUPANCIES),
        ]
        for name, values, allowed in checks:
            for value in values:
                if value not in allowed:
                    raise ValueError(
                        f'Taxonomy.{name}: {value!r} is not one of {sorted(allowed)}'
                    )
        if self.infill and self.llrs not in _INFILLED:
            raise ValueError(
                f'Taxonomy.infill needs llrs LFINF or LFLSINF, not {self.llrs!r}'
            )
        if len(_MATERIAL_TYPES.intersection(self.infill)) > 1:
            raise ValueError(f'Taxonomy.infill has two material types: {self.infill}')
        # canonical order of the atoms, so that equal buildings compare equal
        for name, attribute, modelled in (
            ('material_details', 'material', ('type',)),
            ('infill', 'material', ()),
            ('llrs_details', 'llrs', ('type', 'code_level', 'ductility')),
            ('height_details', 'height', ('storeys',)),
        ):
            atoms: tuple[str, ...] = getattr(self, name)
            for atom in atoms:
                info = _VOCABULARY.get(atom.split(':')[0])
                if (
                    info is None
                    or info.attribute != attribute
                    or info.group in modelled
                ):
                    raise ValueError(f'Taxonomy.{name}: {atom!r} is not allowed there')
            ranks = sorted(atoms, key=lambda a: _VOCABULARY[a.split(':')[0]].rank)
            object.__setattr__(self, name, tuple(ranks))
        if self.storeys is not None and self.storeys_unknown:
            raise ValueError('Taxonomy.storeys is given but storeys_unknown is True')
        if not self.format():
            raise ValueError(
                "a Taxonomy needs at least one attribute; use material='UNK'"
            )

    # ----------------------------------------------------------------- writing

    def format(self) -> str:
        """Write the canonical string in the exposure dialect.

        Attributes come in canonical order, atoms in canonical order inside each
        attribute; ranges of storeys use ``HBET``; code level and ductility without an LLRS
        type follow the material (``UNK+CDL+DUL``).

        Returns:
            The canonical taxonomy string.
        """
        material = [self.material] if self.material else []
        material += self.material_details
        llrs: list[str] = []
        if self.llrs is not None:
            args = f'({"+".join(self.infill)})' if self.infill else ''
            llrs.append(self.llrs + args)
        llrs += [a for a in (self.code_level, self.ductility) if a is not None]
        llrs += self.llrs_details
        if self.llrs is None and material:
            material += llrs
            llrs = []
        height = [self.storeys.format()] if self.storeys is not None else []
        if self.storeys_unknown:
            height.append('H:UNK')
        height += self.height_details
        attributes = ['+'.join(material), '+'.join(llrs), '+'.join(height)]
        attributes += [self.date or '', self.occupancy or '', *self.extra]
        return '/'.join(a for a in attributes if a)

    def __str__(self) -> str:
        """Return :meth:`format`."""
        return self.format()

    # ----------------------------------------------------------------- features

    @property
    def is_unknown(self) -> bool:
        """True when the string says nothing about the structure.

        That is: material absent or ``UNK``, and no LLRS, code level, ductility, infill or
        number of storeys (the whole string ``UNK``, or e.g. ``UNK/H:UNK/RES``).
        """
        return (
            self.material in (None, 'UNK')
            and not self.material_details
            and self.llrs is None
            and self.code_level is None
            and self.ductility is None
            and self.storeys is None
        )

    @property
    def storeys_mid(self) -> float | None:
        """Midpoint of the number of storeys (see :attr:`StoreyRange.mid`), or None."""
        return None if self.storeys is None else self.storeys.mid

    @property
    def macro_class(self) -> str:
        """Coarse structural class for fragility and features.

        ``'RC'`` (``C``, ``CR``, ``SRC``), ``'PRECAST'`` (those with ``PC`` or ``PCPS``),
        ``'URM'`` (``MUR``, ``M``), ``'ADOBE'`` (earth ``E``/``EU``/``ER``, or masonry
        with ``ADO``), ``'STEEL'`` (``S``), ``'WOOD'`` (``W``), ``'UNK'`` (``UNK`` or no
        material) and ``'OTHER'`` for the rest (``CU``, ``MCF``, ``MR``, ``ME``, ``INF``,
        ``MATO``). GEM's own ``MACRO_TAXO`` column puts precast under RC and unknown
        under ``OT``.
        """
        material = self.material
        if material in (None, 'UNK'):
            return 'UNK'
        if material in ('C', 'CR', 'SRC'):
            precast = {'PC', 'PCPS'} & set(self.material_details)
            return 'PRECAST' if precast else 'RC'
        if material in ('E', 'EU', 'ER') or (
            material in ('M', 'MUR', 'MCF', 'MR') and 'ADO' in self.material_details
        ):
            return 'ADOBE'
        if material in ('M', 'MUR'):
            return 'URM'
        return {'S': 'STEEL', 'W': 'WOOD'}.get(material, 'OTHER')


# --------------------------------------------------------------------------- syntax


@dataclass
class _Atom:
    name: str
    position: int
    args: list[list['_Atom']]
    args_position: int
    params: list[tuple[int, str]]  # (position, value)


class _Reader:
    """Recursive-descent reader of the grammar into atoms, keeping positions."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, position: int, problem: str) -> TaxonomyError:
        return TaxonomyError(self.text, position, problem)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ''

    def attributes(self) -> list[list[_Atom]]:
        attributes = [self.attribute()]
        while self.peek() == '/':
            self.pos += 1
            attributes.append(self.attribute())
        if self.pos < len(self.text):
            char = self.peek()
            if char == ')':
                raise self.error(self.pos, "unbalanced parentheses: ')' without '('")
            raise self.error(self.pos, f'unexpected character {char!r}')
        return attributes

    def attribute(self) -> list[_Atom]:
        char = self.peek()
        if char in ('/', ';', ')', ''):
            where = 'at the end' if not char else f'before {char!r}'
            raise self.error(self.pos, f'empty attribute {where}')
        atoms = [self.atom()]
        while self.peek() == '+':
            self.pos += 1
            atoms.append(self.atom())
        return atoms

    def atom(self) -> _Atom:
        start = self.pos
        match = _ATOM_RE.match(self.text, self.pos)
        if match is None:
            char = self.peek()
            if not char or char in '+/;)':
                raise self.error(
                    start, "empty atom (two '+' in a row, or '+' at an end)"
                )
            raise self.error(
                start, f'expected an atom (upper-case code), found {char!r}'
            )
        self.pos = match.end()
        args: list[list[_Atom]] = []
        args_position = self.pos
        if self.peek() == '(':
            self.pos += 1
            args.append(self.attribute())
            while self.peek() == ';':
                self.pos += 1
                args.append(self.attribute())
            if self.peek() != ')':
                raise self.error(
                    args_position, "unbalanced parentheses: '(' is not closed"
                )
            self.pos += 1
        params: list[tuple[int, str]] = []
        while self.peek() == ':':
            self.pos += 1
            params.append((self.pos, self.parameter()))
        return _Atom(match.group(), start, args, args_position, params)

    def parameter(self) -> str:
        start = self.pos
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if _UNIT_RE.match(char):
                self.pos += 1
            elif char == '+' and not _ATOM_RE.match(self.text, self.pos + 1):
                # '+' ends a parameter such as HBET:10+ unless an atom follows it
                self.pos += 1
            else:
                break
        if self.pos == start:
            raise self.error(start, "empty parameter after ':'")
        return self.text[start : self.pos]


def _atom_text(atom: _Atom) -> str:
    return atom.name + ''.join(f':{value}' for _, value in atom.params)


def _parameter(text: str, atom: _Atom) -> tuple[int, str]:
    """Return the position and value of the parameter of ``atom``, or raise.

    Atoms that take no parameter return ``(-1, '')``.
    """
    if atom.name not in _PARAMETER_KINDS:
        if atom.params:
            position = atom.params[0][0] - 1
            raise TaxonomyError(text, position, f'atom {atom.name} takes no parameter')
        return -1, ''
    if len(atom.params) != 1:
        if atom.params:
            position = atom.params[1][0] - 1
            raise TaxonomyError(text, position, f'atom {atom.name} takes one parameter')
        position = atom.position + len(atom.name)
        raise TaxonomyError(
            text, position, f"atom {atom.name} needs a parameter (e.g. '{atom.name}:3')"
        )
    return atom.params[0]


def _check_parameter(text: str, atom: _Atom) -> None:
    """Check the value of a parameter of an atom that is kept as written."""
    position, value = _parameter(text, atom)
    kind = _PARAMETER_KINDS.get(atom.name)
    if kind is None:
        return
    if kind.endswith('irregularity'):
        group = kind.split('_')[0]
        info = _VOCABULARY.get(value)
        if value != 'IRN' and (info is None or info.group != group):
            raise TaxonomyError(
                text,
                position,
                f'{atom.name}:{value}: {value!r} is not a {group} irregularity',
            )
        return
    number = _INT if kind.startswith('int') else _FLOAT
    pattern = rf'(?P<a>{number})'
    if kind.endswith('_range'):
        pattern += rf'(?:(?P<sep>[-,])(?P<b>{number}))?'
    match = re.fullmatch(pattern, value)
    if match is None:
        what = 'a number or a range' if kind.endswith('_range') else 'a number'
        raise TaxonomyError(text, position, f'{atom.name}:{value}: expected {what}')
    if match.groupdict().get('b') is not None:
        low, high = float(match['a']), float(match['b'])
        if match['sep'] == ',':  # v2.0: upper bound first
            low, high = high, low
        if low > high:
            raise TaxonomyError(
                text, position, f'{atom.name}:{value}: range with min > max'
            )


def _storeys(text: str, atom: _Atom) -> StoreyRange | None:
    """Read a storey atom; None for ``H:UNK`` and ``H99``."""
    if atom.name == 'H99':
        _parameter(text, atom)
        return None
    position, value = _parameter(text, atom)

    def fail(problem: str) -> TaxonomyError:
        return TaxonomyError(text, position, f'{atom.name}:{value}: {problem}')

    if atom.name == 'H' and value == 'UNK':
        return None
    if re.fullmatch(_INT, value):
        if atom.name == 'HBET':
            raise fail("HBET needs a range such as 'HBET:4-7' or 'HBET:10+'")
        return StoreyRange(int(value), int(value), approximate=atom.name == 'HAPP')
    if atom.name in ('HEX', 'HAPP'):
        raise fail('expected a whole number of storeys')
    match = re.fullmatch(r'(\d+)([-,])(\d+)', value)
    if match is not None and (match[2] == '-' or atom.name == 'HBET'):
        low, high = int(match[1]), int(match[3])
        if match[2] == ',':  # v2.0 HBET:a,b has the upper bound first
            low, high = high, low
        if low > high:
            raise fail('range with min > max')
        return StoreyRange(low, high)
    if match := re.fullmatch(r'(\d+)\+', value):
        return StoreyRange(int(match[1]), None)
    if atom.name == 'H' and (match := re.fullmatch(r'([<>])(\d+)', value)):
        bound = int(match[2])
        if match[1] == '>':
            return StoreyRange(bound + 1, None)
        if bound < 1:
            raise fail('fewer than 0 storeys')
        return StoreyRange(None, bound - 1)
    raise fail(
        "expected storeys such as 'H:4', 'HBET:4-7', 'HBET:10+', 'H:<5' or 'H:UNK'"
    )


# --------------------------------------------------------------------------- semantics


def _resolve(text: str, atom: _Atom) -> _AtomInfo | None:
    """Find the attribute of an atom (after v2.0 aliases); None for dropped codes."""
    if atom.name in _ALIASES:
        alias = _ALIASES[atom.name]
        if alias is None:
            if atom.params or atom.args:
                raise TaxonomyError(
                    text, atom.position + len(atom.name), f'{atom.name} takes nothing'
                )
            return None
        atom.name = alias
    info = _VOCABULARY.get(atom.name)
    if info is None:
        hint = (
            ' (direction-specific strings are not supported)'
            if atom.name in ('DX', 'DY')
            else ''
        )
        raise TaxonomyError(text, atom.position, f'unknown atom {atom.name!r}{hint}')
    if atom.args and atom.name not in _INFILLED:
        raise TaxonomyError(
            text, atom.args_position, f'atom {atom.name} takes no arguments'
        )
    return info


def _one(text: str, atoms: list[_Atom], what: str) -> _Atom | None:
    if len(atoms) > 1:
        names = ' and '.join(a.name for a in atoms[:2])
        raise TaxonomyError(text, atoms[1].position, f'two {what} ({names})')
    return atoms[0] if atoms else None


def _canonical(atoms: list[_Atom]) -> list[_Atom]:
    return sorted(atoms, key=lambda a: _VOCABULARY[a.name].rank)


def _infill(text: str, atom: _Atom) -> tuple[str, ...]:
    if not atom.args:
        return ()
    if len(atom.args) > 1:
        raise TaxonomyError(
            text, atom.args_position, f'{atom.name} takes one infill argument'
        )
    infill: list[_Atom] = []
    for inner in atom.args[0]:
        info = _resolve(text, inner)
        if info is None:
            continue
        if info.attribute != 'material':
            raise TaxonomyError(
                text,
                inner.position,
                f'{inner.name} is not a material (infill of {atom.name})',
            )
        _check_parameter(text, inner)
        infill.append(inner)
    _one(
        text, [a for a in infill if a.name in _MATERIAL_TYPES], 'infill material types'
    )
    return tuple(a.name for a in infill)


def _by_attribute(text: str, fields: list[list[_Atom]]) -> dict[str, list[_Atom]]:
    """Sort the atoms of the ``/``-separated fields by the attribute they belong to."""
    by_attribute: dict[str, list[_Atom]] = {}
    first_field: dict[str, int] = {}
    for index, atoms in enumerate(fields):
        field_attributes: list[str] = []
        for atom in atoms:
            info = _resolve(text, atom)
            if info is None:
                continue
            attribute = info.attribute
            owner = first_field.setdefault(attribute, index)
            if owner != index:
                hint = (
                    " ('UNK' is the material; leave unknown attributes out)"
                    if atom.name == 'UNK'
                    else ''
                )
                raise TaxonomyError(
                    text, atom.position, f'{attribute} attribute given twice{hint}'
                )
            if field_attributes and attribute != field_attributes[0]:
                # only the dialect 'UNK+CDL+DUL' mixes two attributes: material, then
                # code level / ductility / coefficients of an LLRS without a type
                dialect = (field_attributes[0], attribute) == ('material', 'llrs')
                if not dialect or info.group == 'type':
                    raise TaxonomyError(
                        text,
                        atom.position,
                        f'{atom.name} ({attribute}) in the {field_attributes[0]} attribute:'
                        " separate attributes with '/'",
                    )
            elif field_attributes and field_attributes[-1] != attribute:
                raise TaxonomyError(
                    text,
                    atom.position,
                    f'{atom.name} ({attribute}) after {field_attributes[-1]} atoms',
                )
            field_attributes.append(attribute)
            by_attribute.setdefault(attribute, []).append(atom)
    return by_attribute


def _parse(text: str) -> Taxonomy:
    if not text:
        raise TaxonomyError(
            text, 0, "empty string (write 'UNK' for an unknown building)"
        )
    by_attribute = _by_attribute(text, _Reader(text).attributes())

    def group(attribute: str, *names: str) -> list[_Atom]:
        return [
            a
            for a in by_attribute.get(attribute, [])
            if _VOCABULARY[a.name].group in names
        ]

    def rest(attribute: str, *names: str) -> list[_Atom]:
        return _canonical(
            [
                a
                for a in by_attribute.get(attribute, [])
                if _VOCABULARY[a.name].group not in names
            ]
        )

    def texts(atoms: list[_Atom]) -> tuple[str, ...]:
        for atom in atoms:
            _check_parameter(text, atom)
        return tuple(_atom_text(a) for a in atoms)

    material = _one(text, group('material', 'type'), 'material types')
    material_details = texts(rest('material', 'type'))
    llrs = _one(text, group('llrs', 'type'), 'LLRS types')
    code_level = _one(text, group('llrs', 'code_level'), 'code levels')
    ductility = _one(text, group('llrs', 'ductility'), 'ductility levels')
    for atom in [a for a in (material, llrs, code_level, ductility) if a is not None]:
        _parameter(text, atom)
    llrs_details = texts(rest('llrs', 'type', 'code_level', 'ductility'))
    _one(text, group('llrs', 'lateral_coefficient'), 'lateral force coefficients')
    _one(text, group('llrs', 'column_wall_density'), 'column-wall densities')

    storey_atom = _one(text, group('height', 'storeys'), 'numbers of storeys')
    storeys = _storeys(text, storey_atom) if storey_atom is not None else None
    height_details = texts(rest('height', 'storeys'))

    date: str | None = None
    if 'date' in by_attribute:
        _one(text, group('date', 'year'), 'dates')
        _one(text, group('date', 'condition'), 'physical conditions')
        date = '+'.join(texts(_canonical(by_attribute['date']))) or None

    occupancy = _one(text, by_attribute.get('occupancy', []), 'occupancy classes')
    if occupancy is not None:
        _parameter(text, occupancy)

    extra: list[str] = []
    for attribute in _ATTRIBUTE_ORDER[5:]:
        if attribute in by_attribute:
            atoms = _canonical(by_attribute[attribute])
            extra.append('+'.join(texts(atoms)))

    infill = _infill(text, llrs) if llrs else ()
    try:
        return Taxonomy(
            material=material.name if material else None,
            material_details=material_details,
            llrs=llrs.name if llrs else None,
            infill=infill,
            code_level=code_level.name if code_level else None,
            ductility=ductility.name if ductility else None,
            llrs_details=llrs_details,
            storeys=storeys,
            storeys_unknown=storey_atom is not None and storeys is None,
            height_details=height_details,
            date=date,
            occupancy=occupancy.name if occupancy else None,
            extra=tuple(extra),
            text=text,
        )
    except ValueError as error:  # only v2.0 'unknown' codes, which are dropped
        raise TaxonomyError(text, 0, f'nothing is known ({error})') from error


@functools.lru_cache(maxsize=8192)
def parse_taxonomy(text: str) -> Taxonomy:
    """Parse a GEM Building Taxonomy string.

    Args:
        text: the string, e.g. ``'CR/LFINF(MUR+CBH)+CDL+DUL/H:4/RES'``.

    Returns:
        The parsed taxonomy (cached: equal strings give the same object).

    Raises:
        TaxonomyError: if the string is empty, malformed or uses an unknown atom; its
            ``position`` is the 0-based index of the malformed part.
    """
    return _parse(text)
