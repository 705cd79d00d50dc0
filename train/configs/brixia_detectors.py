"""BrixIA detectors: 3 outputs with BCE (some zone scored 0-1 / 2 / 3), initialised from an NIH
model bundle with conv0 ... transition2 frozen (the paper reports AUCs 0.67 / 0.72 / 0.84).

python -m train.main \\
    --config train/configs/brixia_detectors.py:init_from=runs/nih_bce/best_model \\
    --workdir runs/brixia_detectors
"""

from iba_jax.data.brixia import DETECTOR_LABELS
from train.config import TrainConfig, check_options

OPTIONS = ("init_from", "manual_dir", "data_dir")


def get_config(options: dict[str, str] | None = None) -> TrainConfig:
    options = check_options(options, OPTIONS)
    return TrainConfig(
        dataset="brixia",
        dataset_config="224",
        data_dir=options.get("data_dir", "~/tensorflow_datasets"),
        manual_dir=options.get("manual_dir"),
        target="detector_labels",
        label_names=DETECTOR_LABELS,
        arch="densenet121",
        in_channels=3,
        head="sigmoid",
        normalization="imagenet",
        image_size=224,
        init_from=options.get("init_from"),
        freeze_until="transition2",
        loss="bce",
        optimizer="adam",
        learning_rate=1e-4,
        schedule="cosine",
        epochs=30,
        batch_size=32,
        checkpoint_every_steps=200,
        best_metric="mean_auc",
        best_mode="max",
    )
