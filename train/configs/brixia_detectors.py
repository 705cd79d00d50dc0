"""BrixIA detectors: 3 outputs with BCE (some zone scored 0-1 / 2 / 3), initialised from an NIH
model bundle with conv0 ... transition2 frozen (the paper reports AUCs 0.67 / 0.72 / 0.84).
Everything else as brixia_regression, whose options it takes.

python -m train.main \\
    --config train/configs/brixia_detectors.py:init_from=runs/nih_bce/best_model \\
    --workdir runs/brixia_detectors
"""

from iba_jax.data.brixia import DETECTOR_LABELS
from train.config import TrainConfig
from train.configs import brixia_regression


def as_detectors(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the three detectors as its outputs: the detector labels, a sigmoid head,
    BCE, and the validation mean AUC choosing the best model."""
    return cfg.replace(
        target="detector_labels",
        label_names=DETECTOR_LABELS,
        head="sigmoid",
        task="multilabel",
        loss="bce",
        best_metric="mean_auc",
        best_mode="max",
    )


def get_config(options: dict[str, str] | None = None) -> TrainConfig:
    return as_detectors(brixia_regression.get_config(options))
