"""DenseNet-121 on NIH ChestX-ray14 with sigmoid BCE, as the paper's classifier (224 px, RGB,
ImageNet normalisation). Needs the data set built from a local download (README, "Using the real
data sets"); about 86,500 training images.

python -m train.main --config train/configs/nih_bce.py --workdir runs/nih_bce
python -m train.main --config train/configs/nih_bce.py:classes=8,init_from=densenet121.pth ...
  classes=8: the 8 box classes only; init_from: torchvision ImageNet weights you downloaded.
The paper reports a mean test AUC of 0.79 over the 14 classes (Khakzar et al., 2021).
"""

from iba_jax.data.nih import BOX_LABELS
from iba_jax.labels import NIH14
from train.config import TrainConfig, check_options

OPTIONS = ("classes", "init_from", "manual_dir", "data_dir")


def get_config(options: dict[str, str] | None = None, loss: str = "bce") -> TrainConfig:
    options = check_options(options, OPTIONS)
    eight = options.get("classes", "14") == "8"
    return TrainConfig(
        dataset="nih_chest_xray14",
        dataset_config="224_box8" if eight else "224",
        data_dir=options.get("data_dir", "~/tensorflow_datasets"),
        manual_dir=options.get("manual_dir"),
        target="labels",
        label_names=BOX_LABELS if eight else NIH14,
        arch="densenet121",
        in_channels=3,
        head="sigmoid",
        normalization="imagenet",
        image_size=224,
        init_from=options.get("init_from"),
        loss=loss,
        optimizer="adam",
        learning_rate=1e-4,
        weight_decay=1e-5,
        schedule="cosine",
        warmup_steps=500,
        epochs=10,
        batch_size=32,
        checkpoint_every_steps=500,
        best_metric="mean_auc",
        best_mode="max",
    )
