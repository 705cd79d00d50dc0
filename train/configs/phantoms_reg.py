"""The shipped phantom regressor: phantoms_cls's network and optimisation on cxr_phantoms
regression_128 (BrixIA-like), with a Linear + ReLU head and MSE on the global score.

python -m train.main --config train/configs/phantoms_reg.py --workdir runs/phantoms_reg
Target (issue 5): MAE <= 1.5 (global score 0-18) on the phantom test split.
"""

from train.config import TrainConfig
from train.configs import phantoms_cls


def get_config() -> TrainConfig:
    return phantoms_cls.get_config().replace(
        dataset_config="regression_128",
        target="global_score",
        label_names=("global_score",),
        head="relu",
        task="regression",
        loss="mse",
        best_metric="mae",
        best_mode="min",
    )
