# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

r"""Kornia augmentations for synthetic aperture radar (SAR) backscatter.

Three groups, all batched ``[B, C, H, W]`` and meant to run on the accelerator in a
datamodule's ``on_after_batch_transfer``:

* **Unit conversions** (deterministic, ``p=1``): :class:`PowerToDecibel`,
  :class:`AmplitudeToDecibel`, :class:`DecibelToPower` and :class:`DecibelToAmplitude`.
  Power (intensity) is what calibrated products call sigma nought in linear units;
  amplitude is its square root (detected digital numbers are amplitudes). The decibel
  value is the same for both: :math:`10 \log_{10} P = 20 \log_{10} A`.
* **Radiometric augmentations** on SAR channels only: :class:`RandomSpeckle`
  (multiplicative gamma speckle) and :class:`RandomDecibelGain` (calibration offset).
* **Geometric augmentation** that respects the side-looking geometry:
  :class:`SARGeometricAugmentation`, which moves every image-like key of a batch with the same random transform.

Every transform keeps ``NaN`` (nodata) as ``NaN``; the geometric one never creates it.
Apply the radiometric ones to sigma nought *before* standardising it (on the raw batch's
``image``, in dB), and the geometric one to the model batch.

.. versionadded:: 0.1
"""

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import kornia.augmentation as K
import torch
from kornia.augmentation import IntensityAugmentationBase2D
from kornia.augmentation.random_generator import PlainUniformGenerator
from torch import Tensor, nn
from typing_extensions import deprecated

from ..errors import ArgumentError

#: Radiometric domains of :class:`RandomSpeckle` and :class:`RandomDecibelGain`.
Domain = Literal['db', 'linear']
_DOMAINS: tuple[str, ...] = ('db', 'linear')

#: Decibels per neper of power: :math:`10 / \ln 10`.
_DB_PER_LN = 10.0 / math.log(10.0)


def _check_domain(domain: str) -> None:
    """Raise :class:`ArgumentError` unless *domain* is ``'db'`` or ``'linear'``."""
    if domain not in _DOMAINS:
        raise ArgumentError(
            f'domain must be one of {", ".join(map(repr, _DOMAINS))}, not {domain!r}'
        )


def _check_range(
    value: tuple[float, float], name: str, low: float = -math.inf
) -> tuple[float, float]:
    """Return *value* as a float pair after checking that low <= value[0] <= value[1]."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ArgumentError(
            f'{name} must be a (min, max) pair of numbers, not {value!r}'
        ) from None
    if not (math.isfinite(a) and math.isfinite(b)) or a > b or a < low:
        bound = f' with min > {low}' if low > -math.inf else ''
        raise ArgumentError(
            f'{name} must be a finite (min, max) pair with min <= max{bound}, '
            f'not {value!r}'
        )
    return a, b


class _ToDecibel(IntensityAugmentationBase2D):
    """Base of the conversions to decibels: ``scale * log10(max(x, eps))``."""

    #: 10 for power, 20 for amplitude.
    scale: ClassVar[float] = 10.0
    #: Default smallest value kept, in linear units (sets the dB floor).
    default_eps: ClassVar[float] = 1e-10

    def __init__(self, eps: float | None = None, keepdim: bool = False) -> None:
        """Initialize a new conversion to decibels.

        Args:
            eps: smallest value kept, in linear units; it sets the dB floor (the
                class's ``default_eps`` when None).
            keepdim: whether to keep the output shape the same as input (True) or
                broadcast it to the batch form (False).

        Raises:
            ArgumentError: if *eps* is not positive.
        """
        super().__init__(p=1, keepdim=keepdim)
        eps = self.default_eps if eps is None else eps
        if not eps > 0:
            raise ArgumentError(f'eps must be positive, not {eps}')
        self.flags = {'eps': eps}

    def apply_transform(
        self,
        input: Tensor,
        params: dict[str, Tensor],
        flags: dict[str, Any],
        transform: Tensor | None = None,
    ) -> Tensor:
        """Apply the transform.

        Args:
            input: the input tensor, in linear units
            params: generated parameters
            flags: static parameters
            transform: the geometric transformation tensor

        Returns:
            the input in dB
        """
        return self.scale * torch.log10(input.clamp(min=flags['eps']))


class _FromDecibel(IntensityAugmentationBase2D):
    """Base of the conversions from decibels: ``10^(x / scale)``."""

    #: 10 for power, 20 for amplitude.
    scale: ClassVar[float] = 10.0

    def __init__(self, keepdim: bool = False) -> None:
        """Initialize a new conversion from decibels.

        Args:
            keepdim: whether to keep the output shape the same as input (True) or
                broadcast it to the batch form (False).
        """
        super().__init__(p=1, keepdim=keepdim)

    def apply_transform(
        self,
        input: Tensor,
        params: dict[str, Tensor],
        flags: dict[str, Any],
        transform: Tensor | None = None,
    ) -> Tensor:
        """Apply the transform.

        Args:
            input: the input tensor, in dB
            params: generated parameters
            flags: static parameters
            transform: the geometric transformation tensor

        Returns:
            the input in linear units
        """
        return torch.pow(10.0, input / self.scale)


class PowerToDecibel(_ToDecibel):
    r"""Convert SAR power (intensity) to decibels.

    .. math::

       x_\text{dB} = 10 \log_{10} \max(x, \varepsilon)

    Use it for backscatter in linear power units, e.g. sigma nought, beta nought or
    gamma nought as ratios (m²/m²) or detected intensity :math:`|s|^2`. For amplitudes
    (:math:`|s|`, detected digital numbers) use :class:`AmplitudeToDecibel`.

    Values at or below *eps* (default 1e-10: zero or negative power after noise
    subtraction) become :math:`10 \log_{10} \varepsilon` (−100 dB). ``NaN`` (nodata)
    stays ``NaN``. Applied to every channel, always (``p=1``).

    .. versionadded:: 0.1
    """

    scale = 10.0
    default_eps = 1e-10


class AmplitudeToDecibel(_ToDecibel):
    r"""Convert SAR amplitude to decibels.

    .. math::

       x_\text{dB} = 20 \log_{10} \max(A, \varepsilon)

    Use it for amplitudes :math:`A = |s|` (detected digital numbers of CSK/CSG
    products, amplitude GeoTIFFs); 20 log10 A equals 10 log10 A², the power in dB.

    Values at or below *eps* (default 1e-5) become −100 dB. ``NaN`` (nodata) stays
    ``NaN``. Applied to every channel, always (``p=1``).

    .. versionadded:: 0.1
    """

    scale = 20.0
    default_eps = 1e-5


class DecibelToPower(_FromDecibel):
    r"""Convert decibels to SAR power, the inverse of :class:`PowerToDecibel`.

    .. math::

       x = 10^{x_\text{dB} / 10}

    Useful to work in the linear domain, where speckle is multiplicative with unit
    mean (see :class:`RandomSpeckle`), and to average backscatter correctly (mean of
    power, not of dB). ``NaN`` (nodata) stays ``NaN``. Applied to every channel, always.

    .. versionadded:: 0.1
    """

    scale = 10.0


class DecibelToAmplitude(_FromDecibel):
    r"""Convert decibels to SAR amplitude, the inverse of :class:`AmplitudeToDecibel`.

    .. math::

       A = 10^{x_\text{dB} / 20}

    ``NaN`` (nodata) stays ``NaN``. Applied to every channel, always.

    .. versionadded:: 0.1
    """

    scale = 20.0


class RandomSpeckle(IntensityAugmentationBase2D):
    r"""Multiply SAR power by random fully developed speckle.

    Speckle in a power (intensity) image with an equivalent number of looks (ENL)
    :math:`L` is multiplicative, :math:`I = \sigma^0 \cdot n`, with
    :math:`n \sim \Gamma(\text{shape}=L, \text{rate}=L)`: mean 1, variance :math:`1/L`,
    so the coefficient of variation is :math:`1/\sqrt{L}` (exponential for a single
    look). Each image draws its own :math:`L` uniformly from *looks* and its own
    speckle field (one value per pixel and channel).

    * ``domain='linear'``: the input is power and the output is :math:`x \cdot n`.
    * ``domain='db'``: the input is dB and the output is :math:`x + 10 \log_{10} n`.
      Log speckle is biased and heavy-tailed:
      :math:`E[10 \log_{10} n] = \tfrac{10}{\ln 10} (\psi(L) - \ln L)` and
      :math:`\operatorname{std} = \tfrac{10}{\ln 10} \sqrt{\psi_1(L)}`
      (:math:`\psi`, :math:`\psi_1`: digamma, trigamma). Single-look intensity has a
      mean bias of −2.51 dB and a standard deviation of 5.57 dB; for
      :math:`L = 4`, −0.57 dB and 2.31 dB.

    The input already carries speckle of its own ENL :math:`L_0`; multiplying by
    independent unit-mean speckle keeps the mean power and raises the relative
    variance to :math:`(1 + 1/L_0)(1 + 1/L) - 1`. It is an augmentation towards
    noisier (fewer-look) images, not a re-simulation. ``NaN`` (nodata) stays ``NaN``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        looks: tuple[float, float] = (1.0, 4.0),
        domain: Domain = 'db',
        p: float = 0.5,
        same_on_batch: bool = False,
        keepdim: bool = False,
    ) -> None:
        """Initialize a new RandomSpeckle instance.

        Args:
            looks: (min, max) equivalent number of looks :math:`L` of the added
                speckle, drawn uniformly per image; smaller is noisier.
            domain: ``'db'`` if the input is in decibels, ``'linear'`` if it is power.
            p: probability of applying the transform to each image.
            same_on_batch: apply the same looks and speckle field across the batch.
            keepdim: whether to keep the output shape the same as input (True) or
                broadcast it to the batch form (False).

        Raises:
            ArgumentError: if *looks* is not a positive (min, max) pair or *domain*
                is unknown.
        """
        super().__init__(p=p, same_on_batch=same_on_batch, keepdim=keepdim)
        looks = _check_range(looks, 'looks', low=0.0)
        if looks[0] <= 0:
            raise ArgumentError(f'looks must be positive, not {looks!r}')
        _check_domain(domain)
        self._param_generator = PlainUniformGenerator((looks, 'looks', None, None))
        self.flags = {'domain': domain}

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, Tensor]:
        """Draw the looks of every image and its unit-mean speckle field.

        Args:
            batch_shape: the input shape ``(B, C, H, W)``.

        Returns:
            ``looks`` with shape ``(B,)`` and ``speckle`` (linear, mean 1) with shape
            ``(B, C, H, W)``, or ``(1, C, H, W)`` when ``same_on_batch``.
        """
        params = super().generate_parameters(batch_shape)
        looks = params['looks']
        _, *chw = batch_shape
        n = 1 if self.same_on_batch else looks.shape[0]
        shape = looks[:n].reshape(-1, *([1] * len(chw))).expand(n, *chw)
        speckle = torch.distributions.Gamma(shape, shape).sample()
        # A float32 gamma draw can underflow to 0 (probability ~1e-38 for L = 1);
        # keep the dB output finite.
        params['speckle'] = speckle.clamp(min=torch.finfo(speckle.dtype).tiny)
        return params

    def apply_transform(
        self,
        input: Tensor,
        params: dict[str, Tensor],
        flags: dict[str, Any],
        transform: Tensor | None = None,
    ) -> Tensor:
        """Apply the transform.

        Args:
            input: the input tensor
            params: generated parameters
            flags: static parameters
            transform: the geometric transformation tensor

        Returns:
            the speckled input, in the input's domain
        """
        speckle = params['speckle'].to(device=input.device, dtype=input.dtype)
        if speckle.shape[0] != input.shape[0]:
            speckle = speckle.expand_as(input)
        if flags['domain'] == 'db':
            return input + 10 * torch.log10(speckle)
        return input * speckle


class RandomDecibelGain(IntensityAugmentationBase2D):
    r"""Add a random radiometric calibration offset to SAR backscatter.

    Absolute calibration of spaceborne SAR is good to a fraction of a dB to about
    1 dB, and differs between sensors, beams and processors. This shifts each image by
    one gain :math:`g` (dB) drawn uniformly from *gain_db*, the same for all its pixels
    and channels:

    * ``domain='db'``: :math:`x + g`;
    * ``domain='linear'`` (power): :math:`x \cdot 10^{g/10}`.

    ``NaN`` (nodata) stays ``NaN``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        gain_db: tuple[float, float] = (-2.0, 2.0),
        domain: Domain = 'db',
        p: float = 0.5,
        same_on_batch: bool = False,
        keepdim: bool = False,
    ) -> None:
        """Initialize a new RandomDecibelGain instance.

        Args:
            gain_db: (min, max) gain in dB, drawn uniformly per image.
            domain: ``'db'`` if the input is in decibels, ``'linear'`` if it is power.
            p: probability of applying the transform to each image.
            same_on_batch: apply the same gain across the batch.
            keepdim: whether to keep the output shape the same as input (True) or
                broadcast it to the batch form (False).

        Raises:
            ArgumentError: if *gain_db* is not a (min, max) pair or *domain* is unknown.
        """
        super().__init__(p=p, same_on_batch=same_on_batch, keepdim=keepdim)
        gain_db = _check_range(gain_db, 'gain_db')
        _check_domain(domain)
        self._param_generator = PlainUniformGenerator((gain_db, 'gain_db', None, None))
        self.flags = {'domain': domain}

    def apply_transform(
        self,
        input: Tensor,
        params: dict[str, Tensor],
        flags: dict[str, Any],
        transform: Tensor | None = None,
    ) -> Tensor:
        """Apply the transform.

        Args:
            input: the input tensor
            params: generated parameters
            flags: static parameters
            transform: the geometric transformation tensor

        Returns:
            the input with the gain applied, in the input's domain
        """
        gain_db = params['gain_db'].to(device=input.device, dtype=input.dtype)
        gain_db = gain_db.reshape(-1, *([1] * (input.dim() - 1)))
        if flags['domain'] == 'db':
            return input + gain_db
        return input * torch.pow(10.0, gain_db / 10)


def _no_geometry(max_shift: float) -> list[K.GeometricAugmentationBase2D]:
    """Policy ``'none'``: no geometric augmentation."""
    return []


def _shift(max_shift: float) -> list[K.GeometricAugmentationBase2D]:
    """A small random translation (zero-filled), or nothing when *max_shift* is 0."""
    if max_shift == 0:
        return []
    span = (-max_shift, max_shift)
    return [K.RandomTranslate(span, span, resample='nearest', p=1.0)]


def _azimuth(max_shift: float) -> list[K.GeometricAugmentationBase2D]:
    """Policy ``'azimuth'``: flip along the azimuth (image y) axis, and shift."""
    return [K.RandomVerticalFlip(p=0.5), *_shift(max_shift)]


def _all(max_shift: float) -> list[K.GeometricAugmentationBase2D]:
    """Policy ``'all'``: the 8 flips and 90° rotations of a square, and shift."""
    # Flips and one optional quarter turn, each with p = 0.5, give every element of
    # the dihedral group D4 with probability 1/8 (R^k F is a bijection).
    return [
        K.RandomHorizontalFlip(p=0.5),
        K.RandomVerticalFlip(p=0.5),
        K.RandomRotation90(times=(1, 1), resample='nearest', p=0.5),
        *_shift(max_shift),
    ]


#: Geometric augmentation policies: name -> Kornia augmentations, given ``max_shift``.
_POLICIES: dict[str, Callable[[float], list[K.GeometricAugmentationBase2D]]] = {
    'none': _no_geometry,
    'azimuth': _azimuth,
    'all': _all,
}

#: Names of the geometric augmentation policies.
GEOMETRIC_POLICIES: tuple[str, ...] = tuple(_POLICIES)


class SARGeometricAugmentation(nn.Module):
    r"""The same random geometric transform on every image-like key of a SAR batch.

    A side-looking SAR illuminates the ground across its flight track (range) and
    builds the image along it (azimuth). A building of height :math:`h` seen at
    incidence angle :math:`\theta` is laid over *towards* the sensor by about
    :math:`h / \tan\theta` and casts a shadow *away* from it of about
    :math:`h \tan\theta` (ground range); the wall–ground dihedral facing the sensor
    gives a bright double-bounce line. So where layover, double bounce and shadow fall
    relative to the footprint depends on the look direction. In a north-up geocoded
    image (GEC/GTC) from a near-polar orbit, such as COSMO-SkyMed's, range is roughly
    east–west (image x) and azimuth roughly north–south (image y): a right-looking
    ascending pass looks east, so layover points west and shadow east; a descending
    pass the other way.

    Policies (*policy*):

    * ``'none'``: no geometric augmentation (identity).
    * ``'azimuth'`` (default, physically valid): a vertical flip (along azimuth) with
      probability 0.5, plus a small random shift. The flipped chip is what a sensor
      flying the opposite way and looking the same way would see of a mirrored scene:
      range direction, layover, double-bounce and shadow sides are unchanged. (The
      orbit's heading is about 10° off north, so the mirror is not exact for the
      orbit, but building orientations vary far more than that.)
    * ``'all'``: horizontal and vertical flips and 90° rotations (every element of the
      dihedral group with probability 1/8), plus the shift. A horizontal flip reverses
      the look direction and a quarter turn puts range along the image's y axis, which
      no north-up product from a near-polar orbit has; with a test set from one look
      direction the model can no longer rely on which side layover and shadow fall.
      **Physically invalid for side-looking SAR**; offered for comparison.

    The shift translates by up to ``max_shift`` of the chip's height and width (e.g.
    4 px of a 64 px chip for the default), so a target building at the centre of its
    window stays in view. Uncovered pixels are filled with 0, which the model batch
    reads as "no data" (``sar_valid`` and ``footprint`` 0), the training-city mean
    (standardised ``sar``) and the window's ground level (``dsm``).

    Every key in *image_keys* and *mask_keys* found in the batch gets the same
    transform per sample: image keys are concatenated along channels and passed to
    Kornia as the ``input``, each mask key as a ``mask`` (nearest-neighbour
    resampling, dtype kept). All policies resample with nearest neighbours, so every
    output pixel is an input pixel or the 0 fill: binary masks stay binary and no
    ``NaN`` appears. Other keys (``tabular``, ``label``...) pass through unchanged.
    Image keys must be floating point and ``[B, C, H, W]``; masks ``[B, C, H, W]`` or,
    as TorchGeo's, ``[B, H, W]`` (returned in the same shape). The
    default keys are those of this package's model batch; for a TorchGeo sample
    batch pass ``image_keys=('image',), mask_keys=('mask',)``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        policy: str = 'azimuth',
        max_shift: float = 0.0625,
        image_keys: Sequence[str] = ('sar', 'dsm'),
        mask_keys: Sequence[str] = ('sar_valid', 'footprint'),
    ) -> None:
        """Initialize a new SARGeometricAugmentation instance.

        Args:
            policy: one of :data:`GEOMETRIC_POLICIES`: ``'none'``, ``'azimuth'`` or
                ``'all'``.
            max_shift: largest shift, as a fraction of the chip's height and width
                (0 for none); each sample draws its own.
            image_keys: batch keys of continuous, floating-point images (default:
                the model batch's ``sar`` and ``dsm``).
            mask_keys: batch keys of masks, resampled with nearest neighbours
                (default: the model batch's ``sar_valid`` and ``footprint``).

        Raises:
            ArgumentError: if *policy* is unknown, *max_shift* is not in [0, 0.5) or
                a key argument is a string instead of a sequence of keys.
        """
        super().__init__()
        if policy not in _POLICIES:
            raise ArgumentError(
                f'unknown geometric augmentation policy {policy!r}; '
                f'valid policies: {", ".join(GEOMETRIC_POLICIES)}'
            )
        if not 0 <= max_shift < 0.5:
            raise ArgumentError(
                f'max_shift must be a fraction of the chip size in [0, 0.5), '
                f'not {max_shift}'
            )
        for name, keys in (('image_keys', image_keys), ('mask_keys', mask_keys)):
            if isinstance(keys, str):
                raise ArgumentError(
                    f'{name} must be a sequence of batch keys, e.g. ({keys!r},), '
                    f'not the string {keys!r}'
                )
        self.policy = policy
        self.max_shift = max_shift
        self.image_keys = tuple(image_keys)
        self.mask_keys = tuple(mask_keys)
        augmentations = _POLICIES[policy](max_shift)
        self.augment = (
            K.AugmentationSequential(*augmentations, data_keys=None)
            if augmentations
            else None
        )

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Augment a batch.

        Args:
            batch: a batch dict with ``[B, C, H, W]`` images and ``[B, C, H, W]`` or
                ``[B, H, W]`` masks.

        Returns:
            a new dict with the image-like keys transformed and the rest unchanged.
        """
        out = dict(batch)
        if self.augment is None:
            return out
        images = [key for key in self.image_keys if key in batch]
        masks = [key for key in self.mask_keys if key in batch]
        if not images and not masks:
            return out
        # TorchGeo's masks are [B, H, W]: given a channel for Kornia, then dropped
        flat = {key for key in masks if batch[key].dim() == 3}
        mask = {k: batch[k].unsqueeze(1) if k in flat else batch[k] for k in masks}
        if images:
            channels = [batch[key].shape[1] for key in images]
            image = torch.cat([batch[key] for key in images], dim=1)
        else:
            # Kornia draws parameters from the input; a mask-only batch uses its first
            # mask as input (nearest resampling makes the two paths identical).
            channels = []
            image = mask[masks[0]].float()
        data = {'image': image, **{f'mask_{i}': mask[k] for i, k in enumerate(masks)}}
        result = self.augment(data)
        if images:
            for key, part in zip(images, result['image'].split(channels, dim=1)):
                out[key] = part
        for i, key in enumerate(masks):
            moved = result[f'mask_{i}']
            out[key] = moved.squeeze(1) if key in flat else moved
        return out

    def extra_repr(self) -> str:
        """Return the policy and shift for ``print(module)``."""
        return f'policy={self.policy!r}, max_shift={self.max_shift}'


@deprecated('Use torchgeo_sar_damage.transforms.SARGeometricAugmentation instead')
def sar_geometric_augmentation(
    policy: str = 'azimuth',
    max_shift: float = 0.0625,
    image_keys: Sequence[str] = ('sar', 'dsm'),
    mask_keys: Sequence[str] = ('sar_valid', 'footprint'),
) -> SARGeometricAugmentation:
    """Make the geometric augmentation of a SAR model batch for *policy*.

    .. deprecated:: 0.1
       It only repeats the constructor: use :class:`SARGeometricAugmentation`.

    Args:
        policy: ``'none'``, ``'azimuth'`` (default, physically valid) or ``'all'``.
        max_shift: largest shift, as a fraction of the chip's height and width.
        image_keys: batch keys of continuous images.
        mask_keys: batch keys of masks (nearest-neighbour resampling).

    Returns:
        the augmentation module, ``batch -> batch``.
    """
    return SARGeometricAugmentation(policy, max_shift, image_keys, mask_keys)
