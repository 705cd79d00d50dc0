"""BrixIA's public images: the paper's three detectors (some zone scored 0-1 / 2 / 3; BCE on the
senior reader's scores), one fold of the patient-grouped 5-fold cross-validation or all images.

    python -m train.main \\
        --config train/configs/brixia_public_detectors.py:fold=0,data_dir=D \\
        --workdir runs/brixia_public_detectors/fold0

Options, network and optimisation as ``brixia_public_reg``; only the target, the head (sigmoid)
and the loss differ. The validation metric is the mean ROC AUC of the held-out fold.
"""

from train.config import TrainConfig
from train.configs import brixia_public_reg
from train.configs.brixia_detectors import as_detectors


def get_config(options: dict[str, str] | None = None) -> TrainConfig:
    return as_detectors(brixia_public_reg.get_config(options))
