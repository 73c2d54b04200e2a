# Copyright (c) torchgeo-sar-damage Contributors. All rights reserved.
# Licensed under the MIT License.

"""Building damage classification from SAR and context, judged on unseen cities."""

import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import segmentation_models_pytorch as smp
import torch
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor, nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchgeo.datasets.utils import Sample
from torchgeo.tasks import Classification
from torchmetrics import (
    AUROC,
    Accuracy,
    AveragePrecision,
    CatMetric,
    CohenKappa,
    F1Score,
    MeanMetric,
    MetricCollection,
    Precision,
    Recall,
)
from torchmetrics.functional.classification import (
    binary_f1_score,
    binary_precision_recall_curve,
)
from torchvision.models._api import WeightsEnum
from torchvision.ops import sigmoid_focal_loss

from ..batch import check_modalities, feature_names
from ..errors import ArgumentError
from ..models import FUSIONS, FusionNet
from ..models.pretrained import is_weights_name, resolve_weights
from ..prior_shift import adapt_to_town
from ..reliability import (
    CALIBRATION_METHODS,
    CalibrationMethod,
    calibrate_logits,
    expected_calibration_error,
    fit_calibration,
)

#: Number of classes of ``task='multiclass'``: the four Copernicus EMS grades.
NUM_GRADES = 4
#: Losses each task accepts (the first is the default).
LOSSES = {'binary': ('bce', 'focal'), 'multiclass': ('ce', 'focal')}
#: Equal-width probability bins of the test towns' expected calibration errors.
ECE_BINS = 10


def best_f1_threshold(
    probabilities: Tensor, targets: Tensor, default: float = 0.5
) -> float:
    """The decision threshold with the best F1 score.

    Args:
        probabilities: predicted probabilities of the positive class ``[N]``.
        targets: true labels ``[N]`` (0 or 1).
        default: returned when there is no positive example or no prediction.

    Returns:
        The probability ``t`` that maximises the F1 score of ``probabilities >= t``
        (the smallest such ``t`` on ties).
    """
    if probabilities.numel() == 0 or not bool((targets == 1).any()):
        return default
    precision, recall, thresholds = binary_precision_recall_curve(
        probabilities.float(), targets.long()
    )
    # the last (precision 1, recall 0) point has no threshold
    precision, recall = precision[:-1], recall[:-1]
    f1 = torch.nan_to_num(2 * precision * recall / (precision + recall))
    if thresholds.numel() == 0 or float(f1.max()) <= 0:
        return default
    return float(thresholds[int(torch.argmax(f1))])


def adapted_scores(
    probabilities: Tensor, labels: Tensor, source_prior: float
) -> dict[str, float]:
    """Calibration of one town's damage probabilities, before and after adaptation.

    The probabilities are adapted to the town's own damage rate, estimated from them
    alone, with :func:`~torchgeo_sar_damage.prior_shift.adapt_to_town` (which warns
    and leaves them unadapted when it cannot adapt); the labels only score the
    result.

    Args:
        probabilities: calibrated damage probabilities ``[N]`` of the town's
            buildings; non-finite values are ignored.
        labels: their labels ``[N]``, 1 damaged and 0 not; negative labels are
            ignored.
        source_prior: damage rate the probabilities are calibrated for (the
            validation town's, :attr:`DamageClassification.validation_prior`); NaN
            when unknown, which skips the adaptation.

    Returns:
        ``ece`` (expected calibration error of ``probabilities``, :data:`ECE_BINS`
        bins) and ``damaged_share`` (share of label 1, NaN without labels); unless
        ``source_prior`` is NaN also ``damaged_share_estimate`` (the estimated
        damage rate), ``prior_adapted`` (1 if adapted, else 0), ``adapted_threshold``
        (the expected-F1 threshold of the adapted probabilities),
        ``adapted_F1Score`` (F1 score of ``adapted >= adapted_threshold``) and
        ``adapted_ece``. When not adapted, the ``adapted_*`` values are those of the
        unadapted probabilities at their expected-F1 threshold, what
        :func:`~torchgeo_sar_damage.prior_shift.adapt_to_town` returns.

    .. versionadded:: 0.3
    """
    p = probabilities.detach().reshape(-1).double().cpu()
    y = labels.detach().reshape(-1).cpu()
    keep = (y >= 0) & torch.isfinite(p)
    p, y = p[keep], y[keep].long()
    scores = {
        'ece': expected_calibration_error(p, y, ECE_BINS),
        'damaged_share': float((y == 1).double().mean()) if y.numel() else math.nan,
    }
    if math.isnan(source_prior):
        return scores
    shift = adapt_to_town(p.numpy(), source_prior)
    adapted = torch.from_numpy(shift.probabilities)
    predicted = (adapted >= shift.threshold).long()  # the threshold's rule is >=
    return scores | {
        'damaged_share_estimate': shift.estimate,
        'prior_adapted': float(shift.adapted),
        'adapted_threshold': shift.threshold,
        'adapted_F1Score': float(binary_f1_score(predicted, y)),
        'adapted_ece': expected_calibration_error(adapted, y, ECE_BINS),
    }


class BinaryFocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al., 2017) with a positive-class weight.

    Wraps :func:`torchvision.ops.sigmoid_focal_loss`; its ``alpha`` (the weight of
    positives, negatives get ``1 - alpha``) is ``pos_weight / (1 + pos_weight)``, so
    ``pos_weight`` means what it means for :class:`~torch.nn.BCEWithLogitsLoss`
    (1 for none, ``negatives / positives`` to balance the classes). ``pos_weight`` is
    a buffer, saved with the model.
    """

    def __init__(self, pos_weight: float = 1.0, gamma: float = 2.0) -> None:
        """Initialise a new BinaryFocalLoss.

        Args:
            pos_weight: weight of positive examples relative to negatives.
            gamma: focusing parameter (0 gives weighted cross-entropy).
        """
        super().__init__()
        self.gamma = gamma
        self.pos_weight: Tensor
        self.register_buffer('pos_weight', torch.tensor(float(pos_weight)))

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Compute the mean loss.

        Args:
            logits: ``[N]`` logits.
            targets: ``[N]`` float targets in {0, 1}.

        Returns:
            The loss.
        """
        alpha = float(self.pos_weight / (1 + self.pos_weight))
        loss: Tensor = sigmoid_focal_loss(
            logits, targets, alpha=alpha, gamma=self.gamma, reduction='mean'
        )
        return loss


class DamageClassification(Classification):
    """Building damage classification with a multimodal :class:`FusionNet`.

    Each sample is one building (a window centred on its footprint, see
    ``docs/design/batch_contract.md``); the model fuses the chosen modalities
    (SAR, OSM footprint, DSM, GEM exposure and, with the benchmark datasets that have
    it, pre-event optical imagery) and predicts whether the building is
    damaged (``task='binary'``: Copernicus EMS *Damaged* or *Destroyed*) or its EMS
    grade (``task='multiclass'``, four grades; use the data module's
    ``scheme='four'``).

    * **Loss**: ``'bce'`` (binary cross-entropy with ``pos_weight``) or ``'focal'``
      for ``'binary'``; ``'ce'`` (cross-entropy with class weights) or ``'focal'``
      for ``'multiclass'``. ``pos_weight='auto'`` sets the weight of positives to
      negatives / positives (class weights inversely proportional to frequency for
      ``'multiclass'``) counted on the training cities by the data module; it is a
      buffer of the loss, so checkpoints keep it.
    * **Metrics** (torchmetrics): F1 score, precision, recall, Cohen's kappa, overall
      accuracy, AUROC and average precision (macro averages over grades for
      ``'multiclass'``), logged as ``train_*``, ``val_*``, ``test_*`` and, at test
      time, per test city as ``test_<city>_*`` (one test dataloader per city).
    * **Per-town calibration and damage-rate adaptation** (binary, at test time):
      each test city's calibrated probabilities and labels are gathered (from every
      process, as the city metrics are) and scored by :func:`adapted_scores`:
      ``test_<city>_ece`` (expected calibration error, :data:`ECE_BINS` bins) and
      ``test_<city>_damaged_share`` (the labels' share of damaged buildings); and,
      with the probabilities adapted without labels to the town's estimated damage
      rate from :attr:`validation_prior`
      (:func:`~torchgeo_sar_damage.prior_shift.adapt_to_town`),
      ``test_<city>_damaged_share_estimate``, ``test_<city>_prior_adapted`` (1, or
      0 when the adaptation failed safe, with a warning, and the ``adapted_*``
      values below are those of the unadapted probabilities),
      ``test_<city>_adapted_threshold`` (their expected-F1 threshold),
      ``test_<city>_adapted_F1Score`` (F1 at that threshold, beside
      ``test_<city>_F1Score`` at the stored :attr:`threshold`) and
      ``test_<city>_adapted_ece``. AUROC and average precision are unchanged by the
      adaptation, which keeps the ranking. With a NaN :attr:`validation_prior` (an
      old checkpoint, or no validation run) nothing adapted is logged, with one
      warning. The gathered probabilities take 8 bytes per building, on the
      model's device (torchmetrics cannot gather states kept on the CPU across
      processes with NCCL), and are freed at the end of the test; each test run
      starts without the cities of an earlier one.
    * **Decision threshold** (binary): at the end of every validation epoch the
      threshold with the best F1 over all validation-city predictions is chosen
      (:func:`best_f1_threshold`) and kept in the buffer :attr:`threshold` (so in the
      checkpoint's ``state_dict`` as ``'threshold'``, also copied to the checkpoint
      key ``'decision_threshold'``); validation metrics are reported at the new
      threshold, training, test metrics and predictions use the stored one.
      Threshold-free metrics (AUROC, average precision) do not depend on it.
    * **Calibration**: at the end of every validation epoch, before the threshold, a
      temperature ``T`` and a bias ``b`` are fitted on the validation-city logits
      (:meth:`fit_calibration`, with
      :func:`~torchgeo_sar_damage.reliability.fit_calibration`) and kept in the
      buffers :attr:`temperature` and :attr:`calibration_bias` (checkpoint keys
      ``'temperature'`` and ``'calibration_bias'`` too). :meth:`calibrate` maps a
      logit ``z`` to ``z / T + b``, so the damage probability is
      ``sigmoid(z / T + b)``; the threshold, predictions and metrics are on these
      calibrated probabilities. ``calibration_method='bcts'`` (the default;
      bias-corrected temperature scaling, Alexandari et al., 2020, which for one
      logit is Platt scaling, also accepted as ``'platt'``) fits both: the bias
      removes the shift of the logits that the class-balanced loss and the
      validation town's own damage rate leave, which a temperature alone cannot.
      ``'temperature'`` fits ``T`` only (``b = 0``, temperature scaling, Guo et al.,
      2017). With ``task='multiclass'`` only the temperature is fitted, whatever
      the method (a bias would be one per grade). Rankings (AUROC, AP) are unchanged
      (``T > 0``). The validation town's damage rate (share of damaged buildings
      among the labels of the fit) is kept in the buffer :attr:`validation_prior`
      (checkpoint key ``'validation_prior'``; NaN for multiclass): the source prior
      of a later label-shift adaptation. Checkpoints saved before these existed
      load with ``T = 1``, ``b = 0`` and a NaN prior.
    * **Uncertainty**: :meth:`probabilities_with_uncertainty` runs the encoders once
      and samples the dropout of the fusion head (Monte Carlo dropout, Gal and
      Ghahramani, 2016); the uncertainty is the standard deviation of the sampled
      calibrated probabilities.
    * :meth:`predict_step` returns ``building_id``, ``probability`` (of damage;
      ``[B, 4]`` grade probabilities for ``'multiclass'``) and ``prediction``.

    Nothing here depends on how it runs: CPU, GPU, mixed precision
    (``--trainer.precision 16-mixed``) and DDP are Trainer flags.

    .. versionadded:: 0.1

    .. versionchanged:: 0.3
       Bias-corrected temperature scaling (*calibration_method*,
       :attr:`calibration_bias`, :attr:`validation_prior`, :meth:`calibrate`);
       per-town ECE and damage-rate adaptation at test time (``test_<city>_ece``,
       ``test_<city>_adapted_*``, :func:`adapted_scores`).
    """

    #: Monitored by the learning-rate scheduler and checkpoints.
    monitor = 'val_loss'
    mode = 'min'

    def __init__(
        self,
        modalities: Sequence[str] = ('sar', 'osm', 'dsm', 'gem'),
        fusion: str = 'late',
        backbone: str | None = None,
        tabular_features: int | None = None,
        weights: WeightsEnum | str | os.PathLike[str] | None = None,
        task: Literal['binary', 'multiclass'] = 'binary',
        loss: Literal['bce', 'ce', 'focal'] | None = None,
        pos_weight: float | Literal['auto'] | None = 'auto',
        focal_gamma: float = 2.0,
        embed_dim: int = 128,
        dropout: float = 0.2,
        lr: float = 1e-3,
        patience: int = 10,
        pretrained: Sequence[str] = ('sar',),
        load_weights: bool = True,
        calibration_method: CalibrationMethod = 'bcts',
    ) -> None:
        """Initialise a new DamageClassification task.

        Args:
            modalities: a non-empty subset of ``'sar'``, ``'osm'``, ``'dsm'``,
                ``'gem'``, ``'optical'`` (the data module's must be the same;
                ``'optical'`` needs a data module of a benchmark with optical
                imagery).
            fusion: a key of :data:`~torchgeo_sar_damage.models.FUSIONS`
                (``'early'``, ``'late'``, ``'attention'``).
            backbone: timm model name of the image encoders (default: that of
                TorchGeo ``weights``, else ``'resnet18'``).
            tabular_features: columns of the batch's ``tabular`` (default: those of
                the chosen modalities,
                :func:`~torchgeo_sar_damage.datamodules.feature_names`).
            weights: TorchGeo weights for the SAR encoder (a ``WeightsEnum``
                member or its name, e.g. ``'ResNet50_Weights.SENTINEL1_ALL_MOCO'``,
                read from torch hub's cache), or the local path of a state dict to
                start from (see :class:`~torchgeo_sar_damage.models.FusionNet`);
                never downloaded.
            task: ``'binary'`` (damaged or not) or ``'multiclass'`` (four EMS grades).
            loss: ``'bce'`` or ``'focal'`` (binary), ``'ce'`` or ``'focal'``
                (multiclass); default ``'bce'`` / ``'ce'``.
            pos_weight: weight of positive examples: ``'auto'`` (negatives / positives
                of the training cities; inverse class frequencies for multiclass), a
                number (binary only) or None (1).
            focal_gamma: focusing parameter of the focal loss.
            embed_dim: size of the model's branch embeddings.
            dropout: dropout probability of the model.
            lr: learning rate of AdamW.
            patience: epochs without ``val_loss`` improvement before the learning
                rate is reduced.
            pretrained: image modalities whose encoders start from TorchGeo
                ``weights`` (the SAR's only by default; not ``'optical'``, the
                weights are SAR weights); the others start from scratch.
            load_weights: read the TorchGeo weights file when the model is built.
                Checkpoints record False (their state dict holds the trained
                weights), so loading one needs no weights file.
            calibration_method: how the probabilities are calibrated on the
                validation towns: ``'bcts'`` (temperature and bias; ``'platt'`` is
                the same fit) or ``'temperature'`` (temperature only, bias 0); see
                :func:`~torchgeo_sar_damage.reliability.fit_calibration`. Not
                named ``calibration``, which is the data module's SAR calibration
                (Lightning refuses a hyper-parameter of both with two values).

        Raises:
            ArgumentError: if a modality, fusion, task, loss, pos_weight or
                calibration method is invalid.
        """
        check_modalities(modalities)
        if fusion not in FUSIONS:
            raise ArgumentError(
                f'fusion: unknown {fusion!r}; choose from {", ".join(FUSIONS)}'
            )
        if task not in LOSSES:
            raise ArgumentError(
                f"task must be 'binary' or 'multiclass' (four EMS grades), not {task!r}"
            )
        if loss is None:
            loss = 'bce' if task == 'binary' else 'ce'
        if loss not in LOSSES[task]:
            raise ArgumentError(
                f'loss {loss!r} does not fit task {task!r}; choose from '
                f'{", ".join(LOSSES[task])}'
            )
        if isinstance(pos_weight, str) and pos_weight != 'auto':
            raise ArgumentError(
                f"pos_weight must be 'auto', a number or None, not {pos_weight!r}"
            )
        if isinstance(pos_weight, int | float) and (
            task != 'binary' or not pos_weight > 0
        ):
            raise ArgumentError(
                f'pos_weight={pos_weight}: a number must be positive and is for '
                "task='binary' only ('auto' or None for multiclass)"
            )
        if calibration_method not in CALIBRATION_METHODS:
            raise ArgumentError(
                f'calibration_method: unknown {calibration_method!r}; choose from '
                f'{", ".join(CALIBRATION_METHODS)}'
            )
        model = backbone
        if model is None:  # the model of TorchGeo weights, else FusionNet's default
            torchgeo = resolve_weights(weights) if is_weights_name(weights) else None
            model = 'resnet18' if torchgeo is None else torchgeo.meta['model']
        super().__init__(
            model=model,
            weights=weights
            if weights is None or isinstance(weights, WeightsEnum)
            else os.fspath(weights),
            in_channels=1,
            task=task,
            num_classes=NUM_GRADES if task == 'multiclass' else None,
            loss=loss,
            lr=lr,
            patience=patience,
        )

    # -- configuration ---------------------------------------------------------------

    @property
    def num_outputs(self) -> int:
        """Logits per building: 1 (binary) or 4 (EMS grades)."""
        return NUM_GRADES if self.hparams['task'] == 'multiclass' else 1

    def configure_models(self) -> None:
        """Build the :class:`~torchgeo_sar_damage.models.FusionNet` and its buffers.

        The buffers are the decision :attr:`threshold` (0.5), the calibration's
        :attr:`temperature` (1) and :attr:`calibration_bias` (0), and the
        :attr:`validation_prior` (NaN until a validation has run).
        """
        modalities = check_modalities(self.hparams['modalities'])
        features = self.hparams['tabular_features']
        if features is None:
            features = len(feature_names(modalities))
        self.model = FusionNet(
            modalities,
            fusion=self.hparams['fusion'],
            backbone=self.hparams['backbone'],
            tabular_features=features,
            num_outputs=self.num_outputs,
            weights=self.weights
            if isinstance(self.weights, str | os.PathLike | WeightsEnum)
            else None,
            embed_dim=self.hparams['embed_dim'],
            dropout=self.hparams['dropout'],
            pretrained=self.hparams.get('pretrained', ('sar',)),
            load_weights=self.hparams.get('load_weights', True),
        )
        self.threshold: Tensor
        self.register_buffer('threshold', torch.tensor(0.5))
        self.temperature: Tensor
        self.register_buffer('temperature', torch.tensor(1.0))
        self.calibration_bias: Tensor
        self.register_buffer('calibration_bias', torch.tensor(0.0))
        self.validation_prior: Tensor
        self.register_buffer('validation_prior', torch.tensor(math.nan))

    def configure_losses(self) -> None:
        """The loss; class weights are buffers, set from the training cities in setup."""
        pos_weight = self.hparams['pos_weight']
        value = float(pos_weight) if isinstance(pos_weight, int | float) else 1.0
        match self.hparams['task'], self.hparams['loss']:
            case 'binary', 'bce':
                self.criterion: nn.Module = nn.BCEWithLogitsLoss(
                    pos_weight=torch.tensor(value)
                )
            case 'binary', 'focal':
                self.criterion = BinaryFocalLoss(value, self.hparams['focal_gamma'])
            case 'multiclass', 'ce':
                self.criterion = nn.CrossEntropyLoss(weight=torch.ones(NUM_GRADES))
            case 'multiclass', 'focal':
                self.criterion = smp.losses.FocalLoss(
                    mode='multiclass', gamma=self.hparams['focal_gamma']
                )

    def _metrics(self, sync_on_compute: bool = True) -> MetricCollection:
        task = self.hparams['task']
        common: dict[str, Any] = {'task': task, 'sync_on_compute': sync_on_compute}
        if task == 'multiclass':
            common['num_classes'] = NUM_GRADES
        average = 'macro' if task == 'multiclass' else None
        extra: dict[str, Any] = {'average': average} if average else {}
        micro: dict[str, Any] = {'average': 'micro'} if average else {}
        return MetricCollection(
            {
                'F1Score': F1Score(**common, **extra),
                'Precision': Precision(**common, **extra),
                'Recall': Recall(**common, **extra),
                'CohenKappa': CohenKappa(**common),
                'OverallAccuracy': Accuracy(**common, **micro),
                'AUROC': AUROC(**common, **extra),
                'AveragePrecision': AveragePrecision(**common, **extra),
            }
        )

    def configure_metrics(self) -> None:
        """Torchmetrics of every stage (see the class docstring)."""
        metrics = self._metrics()
        self.train_metrics = metrics.clone(prefix='train_')
        # validation metrics are computed once per epoch on the predictions gathered
        # from every process, so they must not synchronise again
        self.val_metrics = self._metrics(sync_on_compute=False).clone(prefix='val_')
        self.test_metrics = metrics.clone(prefix='test_')
        self.city_metrics = nn.ModuleDict()
        # (probability, label) pairs of each test city, binary only
        self.city_outputs = nn.ModuleDict()
        self.test_loss_mean = MeanMetric()
        self.val_logits = CatMetric()
        self.val_targets = CatMetric()

    def configure_optimizers(self) -> OptimizerLRScheduler:
        """AdamW with learning-rate reduction on a ``val_loss`` plateau.

        Returns:
            The optimiser and scheduler (skipped with a warning when no validation
            runs).
        """
        optimizer = AdamW(self.parameters(), lr=self.hparams['lr'])
        scheduler = ReduceLROnPlateau(optimizer, patience=self.hparams['patience'])
        return {
            'optimizer': optimizer,
            'lr_scheduler': {
                'scheduler': scheduler,
                'monitor': self.monitor,
                'strict': False,
            },
        }

    def setup(self, stage: str) -> None:
        """Check the data module matches, and set ``pos_weight='auto'`` for training.

        Args:
            stage: ``'fit'``, ``'validate'``, ``'test'`` or ``'predict'``.

        Raises:
            ArgumentError: if the data module's modalities or labels do not fit the
                task, or ``pos_weight='auto'`` has no data module to count on.
        """
        datamodule = getattr(self.trainer, 'datamodule', None)
        modalities = check_modalities(self.hparams['modalities'])
        if datamodule is not None and hasattr(datamodule, 'modalities'):
            if tuple(datamodule.modalities) != modalities:
                raise ArgumentError(
                    f'the data module gives modalities {list(datamodule.modalities)} '
                    f'but the model uses {list(modalities)}; set the same in both'
                )
            num_classes = getattr(datamodule, 'num_classes', None)
            if num_classes is not None and num_classes != max(2, self.num_outputs):
                raise ArgumentError(
                    f"task={self.hparams['task']!r} needs the data module's scheme="
                    f'{"four" if self.num_outputs > 1 else "binary"!r}'
                )
        sar_input = self.model.sar_input
        if sar_input is not None and (stage == 'fit' or not sar_input.has_statistics):
            sar = getattr(datamodule, 'statistics', None)
            if sar is not None:
                self.model.set_sar_statistics(sar.sar_mean_db, sar.sar_std_db)
        if stage != 'fit' or self.hparams['pos_weight'] != 'auto':
            return
        statistics = getattr(datamodule, 'statistics', None)
        counts = getattr(statistics, 'class_counts', None)
        if counts is None:
            raise ArgumentError(
                "pos_weight='auto' counts the training labels of a "
                'SARDamageDataModule; train with one or give a number'
            )
        self.set_class_weights(counts)

    def set_class_weights(self, counts: Sequence[int]) -> None:
        """Set the loss weights from training class counts (``pos_weight='auto'``).

        Args:
            counts: buildings per class (index = label).
        """
        n = torch.tensor(counts, dtype=torch.float64).clamp(min=1)
        criterion = self.criterion
        if isinstance(criterion, nn.BCEWithLogitsLoss | BinaryFocalLoss):
            assert criterion.pos_weight is not None
            criterion.pos_weight.fill_(float(n[0] / n[1]))
        elif isinstance(criterion, nn.CrossEntropyLoss):
            assert criterion.weight is not None
            weight = n.sum() / (len(n) * n)
            criterion.weight.copy_(weight.to(criterion.weight))

    # -- steps -----------------------------------------------------------------------

    def _loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.hparams['task'] == 'binary':
            loss: Tensor = self.criterion(logits.squeeze(1), labels.float())
        else:
            loss = self.criterion(logits, labels)
        return loss

    def _scores(self, logits: Tensor) -> Tensor:
        """Scores for the metrics: damage probability recentred on the threshold.

        torchmetrics thresholds binary probabilities at 0.5;
        ``sigmoid(logit - logit(threshold))`` is at least 0.5 exactly where the
        probability is at least :attr:`threshold`, and ranks buildings as the
        probability does (so AUROC and average precision are unchanged).
        """
        logits = self.calibrate(logits)
        if self.hparams['task'] == 'binary':
            threshold = self.threshold.clamp(1e-6, 1 - 1e-6)
            return torch.sigmoid(logits.squeeze(1) - torch.logit(threshold))
        return logits.softmax(dim=1)

    def calibrate(self, logits: Tensor) -> Tensor:
        """Calibrated logits: ``logits / T + b`` (binary) or ``logits / T`` (grades).

        ``T`` is :attr:`temperature` and ``b`` :attr:`calibration_bias`, both fitted
        on the validation towns (:meth:`fit_calibration`); the mapping is
        :func:`~torchgeo_sar_damage.reliability.calibrate_logits`, the one every
        probability of this task goes through.

        Args:
            logits: the model's output, ``[B, 1]`` or ``[B, 4]``.

        Returns:
            The calibrated logits (float32 or wider), of the same shape.

        .. versionadded:: 0.3
        """
        return calibrate_logits(logits.float(), self.temperature, self.calibration_bias)

    def fit_calibration(self, logits: Tensor, targets: Tensor) -> None:
        """Fit the calibration on validation logits and record their damage rate.

        Sets :attr:`temperature` and :attr:`calibration_bias` with
        ``calibration_method`` (temperature only for ``task='multiclass'``, whose
        bias stays 0) and :attr:`validation_prior` to the share of damaged
        buildings (label 1) among the labelled ones (NaN for multiclass or without
        labels). Called at the end of every validation epoch, before the threshold.

        Args:
            logits: the model's output for the validation buildings, ``[N, 1]`` or
                ``[N, 4]``.
            targets: their labels ``[N]``; negative labels are ignored.

        .. versionadded:: 0.3
        """
        binary = self.hparams['task'] == 'binary'
        method: CalibrationMethod = (
            self.hparams.get('calibration_method', 'bcts') if binary else 'temperature'
        )
        temperature, bias = fit_calibration(logits, targets, method)
        self.temperature.fill_(temperature)
        self.calibration_bias.fill_(bias)
        labels = targets.reshape(-1)
        labels = labels[labels >= 0]
        prior = math.nan
        if binary and labels.numel() > 0:
            prior = float((labels == 1).double().mean())
        self.validation_prior.fill_(prior)

    def probabilities(self, logits: Tensor) -> Tensor:
        """Calibrated damage probability ``[B]`` (binary) or grade probabilities.

        Args:
            logits: the model's output.

        Returns:
            ``sigmoid(logits / T + b)`` ``[B]`` for binary, ``softmax(logits / T)``
            ``[B, 4]`` for the grades (see :meth:`calibrate`).
        """
        logits = self.calibrate(logits)
        if self.hparams['task'] == 'binary':
            return torch.sigmoid(logits.squeeze(1))
        return logits.softmax(dim=1)

    @torch.no_grad()
    def probabilities_with_uncertainty(
        self, batch: Sample, samples: int = 20
    ) -> tuple[Tensor, Tensor]:
        """Calibrated probabilities and their Monte Carlo dropout uncertainty.

        The fused embedding is computed once in evaluation mode; the probability is
        that of the head in evaluation mode (no dropout, as :meth:`predict_step`),
        the uncertainty the standard deviation over ``samples`` passes of the head
        with its dropout active (MC dropout restricted to the fusion head, so the
        encoders run once). The model is left in evaluation mode.

        Args:
            batch: a model batch.
            samples: number of dropout samples (0: uncertainty is NaN).

        Returns:
            ``probability`` and ``uncertainty``, ``[B]`` (binary: probability of
            damage) or ``[B, 4]`` (grades).
        """
        model = self.model
        model.eval()
        model._check_batch(batch)
        fused = model.fusion(batch)
        head = model.head
        probability = self.probabilities(head(fused))
        if samples < 1:
            return probability, torch.full_like(probability, float('nan'))
        head.train()
        try:
            draws = torch.stack(
                [self.probabilities(head(fused)) for _ in range(samples)]
            )
        finally:
            head.eval()
        return probability, draws.std(dim=0, correction=0)

    def training_step(
        self, batch: Sample, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """Compute the training loss and update the training metrics.

        Args:
            batch: a model batch.
            batch_idx: index of the batch.
            dataloader_idx: index of the dataloader.

        Returns:
            The loss.
        """
        labels = batch['label']
        logits = self(batch)
        keep = labels >= 0
        loss = self._loss(logits[keep], labels[keep])
        self.train_metrics.update(self._scores(logits[keep]), labels[keep])
        self.log('train_loss', loss, batch_size=int(keep.sum()))
        return loss

    def on_train_epoch_end(self) -> None:
        """Log the training metrics (already gathered from every process)."""
        self.log_dict(self.train_metrics.compute(), sync_dist=True)
        self.train_metrics.reset()

    def validation_step(
        self, batch: Sample, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Compute the validation loss and keep the predictions for the epoch's end.

        Args:
            batch: a model batch.
            batch_idx: index of the batch.
            dataloader_idx: index of the dataloader.
        """
        labels = batch['label']
        logits = self(batch)
        keep = labels >= 0
        loss = self._loss(logits[keep], labels[keep])
        self.log('val_loss', loss, batch_size=int(keep.sum()), sync_dist=True)
        self.val_logits.update(logits[keep].float())
        self.val_targets.update(labels[keep].float())

    def on_validation_epoch_end(self) -> None:
        """Fit the calibration and the threshold on all validation predictions, log.

        Logs ``val_temperature``, ``val_calibration_bias``, ``val_threshold`` and the
        validation metrics. Nothing is fitted during Lightning's sanity check.
        """
        if not self.val_targets.update_called:
            return
        logits = self.val_logits.compute().reshape(-1, self.num_outputs)
        targets = self.val_targets.compute().reshape(-1).long()
        self.val_logits.reset()
        self.val_targets.reset()
        if not self.trainer.sanity_checking:
            self.fit_calibration(logits, targets)
        if self.hparams['task'] == 'binary' and not self.trainer.sanity_checking:
            # on the calibrated probabilities, as predictions will be
            threshold = best_f1_threshold(self.probabilities(logits), targets)
            self.threshold.fill_(threshold)
        self.log('val_temperature', self.temperature, sync_dist=True)
        self.log('val_calibration_bias', self.calibration_bias, sync_dist=True)
        self.log('val_threshold', self.threshold, sync_dist=True)
        self.val_metrics.update(self._scores(logits), targets)
        self.log_dict(self.val_metrics.compute(), sync_dist=True)
        self.val_metrics.reset()

    def _city(self, dataloader_idx: int) -> str:
        datamodule = getattr(self.trainer, 'datamodule', None)
        cities = (
            getattr(datamodule, 'test_names', None)
            or getattr(datamodule, 'test_cities', None)
            or []
        )
        if dataloader_idx < len(cities):
            return str(cities[dataloader_idx])
        return f'dataloader{dataloader_idx}'

    def test_step(self, batch: Sample, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Compute the test loss and update the pooled and per-city metrics.

        Args:
            batch: a model batch.
            batch_idx: index of the batch.
            dataloader_idx: index of the dataloader (the test city).
        """
        labels = batch['label']
        logits = self(batch)
        keep = labels >= 0
        loss = self._loss(logits[keep], labels[keep])
        city = self._city(dataloader_idx)
        self.log(
            f'test_{city}_loss',
            loss,
            batch_size=int(keep.sum()),
            add_dataloader_idx=False,
            sync_dist=True,
        )
        self.test_loss_mean.update(loss, weight=int(keep.sum()))
        scores = self._scores(logits[keep])
        self.test_metrics.update(scores, labels[keep])
        if city not in self.city_metrics:
            new = self._metrics().clone(prefix=f'test_{city}_')
            self.city_metrics[city] = new.to(self.device)
        metrics = self.city_metrics[city]
        assert isinstance(metrics, MetricCollection)
        metrics.update(scores, labels[keep])
        if self.hparams['task'] == 'binary':
            if city not in self.city_outputs:
                # no NaN removal, which would flatten the pairs
                new_outputs = CatMetric(nan_strategy='disable')
                self.city_outputs[city] = new_outputs.to(self.device)
            outputs = self.city_outputs[city]
            assert isinstance(outputs, CatMetric)
            pairs = torch.stack(
                [self.probabilities(logits[keep]), labels[keep].float()], dim=1
            )
            outputs.update(pairs.detach())

    def on_test_epoch_start(self) -> None:
        """Forget the test cities of an earlier test run (another data module's)."""
        self.city_metrics.clear()
        self.city_outputs.clear()

    def _log_town_adaptation(self) -> None:
        """Log :func:`adapted_scores` of every test city and reset their state."""
        prior = float(self.validation_prior)
        if self.city_outputs and math.isnan(prior):
            rank_zero_warn(
                'validation_prior is NaN (a checkpoint saved before version 0.3, or '
                "no validation has run), so the test towns' probabilities are not "
                'adapted to their damage rates and no test_<city>_adapted_* metric '
                'is logged; validate the model (trainer.validate) to record it',
                category=UserWarning,
            )
        for city, outputs in self.city_outputs.items():
            assert isinstance(outputs, CatMetric)
            pairs = outputs.compute()
            outputs.reset()
            if not isinstance(pairs, Tensor) or pairs.numel() == 0:
                continue  # no labelled building
            pairs = pairs.reshape(-1, 2).cpu()
            scores = adapted_scores(pairs[:, 0], pairs[:, 1], prior)
            self.log_dict(
                {f'test_{city}_{name}': value for name, value in scores.items()},
                add_dataloader_idx=False,
                sync_dist=True,
            )

    def on_test_epoch_end(self) -> None:
        """Log the pooled and per-city test metrics and the towns' adaptation."""
        self.log('test_loss', self.test_loss_mean.compute(), add_dataloader_idx=False)
        self.test_loss_mean.reset()
        self.log_dict(
            self.test_metrics.compute(), add_dataloader_idx=False, sync_dist=True
        )
        self.test_metrics.reset()
        for metrics in self.city_metrics.values():
            assert isinstance(metrics, MetricCollection)
            self.log_dict(metrics.compute(), add_dataloader_idx=False, sync_dist=True)
            metrics.reset()
        self._log_town_adaptation()

    # returns a dict (ids, probabilities, classes), not the bare probabilities
    def predict_step(  # type: ignore[override]
        self, batch: Sample, batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        """Predict the damage of every building of a batch.

        Args:
            batch: a model batch.
            batch_idx: index of the batch.
            dataloader_idx: index of the dataloader (the test city).

        Returns:
            ``building_id`` ``[B]``, ``probability`` (``[B]`` probability of damage,
            or ``[B, 4]`` grade probabilities) and ``prediction`` ``[B]`` (damaged at
            the stored threshold, or the most probable grade).
        """
        probability = self.probabilities(self(batch))
        if self.hparams['task'] == 'binary':
            prediction = (probability >= self.threshold).long()
        else:
            prediction = probability.argmax(dim=1)
        return {
            'building_id': batch['building_id'],
            'probability': probability,
            'prediction': prediction,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the threshold and calibration at the checkpoint's top level too.

        The keys are ``'decision_threshold'``, ``'temperature'``,
        ``'calibration_bias'`` and ``'validation_prior'`` (copies of the buffers of
        the ``state_dict``, for readers without the model).

        Args:
            checkpoint: the checkpoint being saved.
        """
        checkpoint['decision_threshold'] = float(self.threshold)
        checkpoint['temperature'] = float(self.temperature)
        checkpoint['calibration_bias'] = float(self.calibration_bias)
        checkpoint['validation_prior'] = float(self.validation_prior)
        if self.model.weights_name is not None:
            # the architecture of TorchGeo weights, without reading their file again
            hparams = checkpoint.setdefault('hyper_parameters', {})
            hparams['weights'] = self.model.weights_name
            hparams['load_weights'] = False

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Give older checkpoints the calibration buffers they lack.

        Saved before temperature scaling: temperature 1; before the bias: bias 0
        (their probabilities are unchanged) and a validation prior of NaN (unknown).

        Args:
            checkpoint: the checkpoint being loaded.
        """
        state = checkpoint.get('state_dict')
        if not isinstance(state, dict):
            return
        defaults = {
            'temperature': 1.0,
            'calibration_bias': 0.0,
            'validation_prior': math.nan,
        }
        for key, value in defaults.items():
            if key not in state:
                state[key] = torch.tensor(value)
