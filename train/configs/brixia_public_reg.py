"""BrixIA's public images: the severity regressor (global score 0-18, Linear + ReLU, MSE),
one fold of the patient-grouped 5-fold cross-validation or all images.

    iba-jax build-data brixia_public --config 128 --manual-dir DIR --data-dir D --on-bad-image skip
    python -m train.main --config train/configs/brixia_public_reg.py:fold=0,data_dir=D \\
        --workdir runs/brixia_public_reg/fold0

``fold=K`` trains on the other four folds and validates on fold K (its out-of-fold
predictions); ``fold=all`` trains on every image (validating on fold 0, which it has seen: only
the shipped model is trained so). ``init_from`` starts from a model bundle, e.g. the shipped
``phantoms_reg`` (``iba_jax/pretrained/phantoms_reg``), to measure whether phantom pre-training
helps. The network is the shipped phantom models' small DenseNet at 128 px, one channel.
"""

from iba_jax.data.brixia_public import FOLDS
from train.config import TrainConfig, check_options
from train.configs import phantoms_reg

OPTIONS = ("fold", "init_from", "data_dir")


def fold_splits(fold: str) -> tuple[str, str]:
    """(train_split, eval_split) of ``fold`` (0-4, or ``all``)."""
    if fold == "all":
        return "+".join(FOLDS), FOLDS[0]
    if fold not in {str(k) for k in range(len(FOLDS))}:
        raise ValueError(f"fold: expected 0 to {len(FOLDS) - 1} or all; got {fold!r}.")
    held = FOLDS[int(fold)]
    return "+".join(f for f in FOLDS if f != held), held


def get_config(options: dict[str, str] | None = None) -> TrainConfig:
    options = check_options(options, OPTIONS)
    train_split, eval_split = fold_splits(options.get("fold", "0"))
    return phantoms_reg.get_config().replace(
        dataset="brixia_public",
        dataset_config="128",
        data_dir=options.get("data_dir", "~/tensorflow_datasets"),
        train_split=train_split,
        eval_split=eval_split,
        init_from=options.get("init_from"),
        epochs=60,
        batch_size=16,
        warmup_steps=20,
        checkpoint_every_steps=100,
    )
