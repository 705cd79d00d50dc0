"""As nih_bce, with weighted BCE: class c's positive term weighted by #negatives / #positives
on the training split (the paper's comparison: mean AUC 0.788 weighted vs 0.790 plain).

python -m train.main --config train/configs/nih_weighted_bce.py --workdir runs/nih_weighted_bce
Takes the same options as nih_bce (classes=8, init_from=..., manual_dir=..., data_dir=...).
"""

from train.config import TrainConfig
from train.configs import nih_bce


def get_config(options: dict[str, str] | None = None) -> TrainConfig:
    return nih_bce.get_config(options, loss="weighted_bce")
