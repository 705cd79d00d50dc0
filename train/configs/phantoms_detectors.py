"""BrixIA's three detectors on the phantoms (some zone scored 0-1 / 2 / 3; BCE), with
phantoms_cls's network and optimisation on cxr_phantoms regression_128: the model of Table 2
(IoU per detector) on the phantoms.

python -m train.main --config train/configs/phantoms_detectors.py \\
    --workdir runs/phantoms_detectors
"""

from iba_jax.data.brixia import DETECTOR_LABELS
from train.config import TrainConfig
from train.configs import phantoms_cls


def get_config() -> TrainConfig:
    return phantoms_cls.get_config().replace(
        dataset_config="regression_128",
        target="detector_labels",
        label_names=DETECTOR_LABELS,
    )
