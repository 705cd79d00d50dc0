"""BrixIA's public images: the paper's three detectors (some zone scored 0-1 / 2 / 3; BCE on the
senior reader's scores), one fold of the patient-grouped 5-fold cross-validation or all images.

    python -m train.main \\
        --config train/configs/brixia_public_detectors.py:fold=0,data_dir=D \\
        --workdir runs/brixia_public_detectors/fold0

Options, network and optimisation as ``brixia_public_reg``; only the target, the head (sigmoid)
and the loss differ. The validation metric is the mean ROC AUC of the held-out fold.
"""

from iba_jax.data.brixia import DETECTOR_LABELS
from train.config import TrainConfig
from train.configs import brixia_public_reg


def get_config(options: dict[str, str] | None = None) -> TrainConfig:
    return brixia_public_reg.get_config(options).replace(
        target="detector_labels",
        label_names=DETECTOR_LABELS,
        head="sigmoid",
        task="multilabel",
        loss="bce",
        best_metric="mean_auc",
        best_mode="max",
    )
