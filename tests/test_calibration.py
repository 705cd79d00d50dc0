"""β calibration: the sweep reports both terms, compiles once, and scores the maps."""

import jax
import numpy as np
import pytest

from iba_jax.attribute import IBAConfig, iba
from iba_jax.calibration import beta_markdown, beta_sweep
from iba_jax.cli import main
from iba_jax.objectives import target_bce
from iba_jax.stats import estimate_feature_stats


@pytest.fixture(scope="module")
def setting(tiny_model):
    net, variables = tiny_model
    data = jax.random.normal(jax.random.key(8), (32, 64, 64, 3))
    stats = estimate_feature_stats(net, variables, [data], "denseblock3")
    return net, variables, stats, data[:2]


def test_a_sweep_trades_information_for_the_model_term_and_compiles_once(setting):
    net, variables, stats, images = setting
    traces = []

    def counted_bce(logits, target):
        traces.append(1)  # runs when the loop is traced, not when it runs
        return target_bce(logits, target)

    run = lambda config: iba(
        net,
        variables,
        stats,
        images,
        1,
        model_loss=counted_bce,
        config=config,
        key=jax.random.key(3),
    )
    config = IBAConfig(steps=6, samples=2, unroll=False)
    points = beta_sweep(run, [0.001, 0.1, 10.0], config, score=lambda maps: float(maps.sum()))
    assert len(traces) == 1  # β is traced: one compilation for the whole sweep
    assert [p.beta for p in points] == [0.001, 0.1, 10.0]
    information = [p.information_end / p.beta for p in points]  # the mean capacity itself
    assert information[0] > information[1] > information[2]  # more β, less information kept
    lam = [p.lam_mean for p in points]
    assert lam[0] > lam[1] > lam[2]
    # At the first step λ is the same for every β: the information term scales with β alone.
    starts = np.array([p.information_start / p.beta for p in points])
    np.testing.assert_allclose(starts, starts[0], rtol=1e-5)
    assert points[0].model_start == pytest.approx(points[2].model_start, rel=1e-5)
    maps, _ = run(IBAConfig(beta=10.0, steps=6, samples=2, unroll=False))
    assert points[2].score == pytest.approx(float(maps.sum()), rel=1e-6)
    table = beta_markdown(points)
    assert table.count("\n") == 4 and "| 0.001 |" in table
    with pytest.raises(ValueError, match=r"betas: expected values > 0; got -1"):
        beta_sweep(run, [-1], config)


@pytest.mark.parametrize(
    ("model", "config", "method"),
    [
        ("phantoms_cls", "classification_128_mini", "iba"),
        ("phantoms_reg", "regression_128_mini", "regression_iba_mse"),  # labels: each score
    ],
)
def test_the_command_sweeps_a_shipped_model_on_a_data_set(model, config, method, tmp_path, capsys):
    data = ["cxr_phantoms", "--config", config, "--data-dir", str(tmp_path)]
    command = ["beta-sweep", "--model", model, *data, "--method", method, "--limit", "2"]
    assert main([*command, "--betas", "0.1,10"]) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith(("| 0.1 |", "| 10 |"))]
    assert len(rows) == 2
    scores = [float(row.rstrip(" |").rsplit("|", 1)[1]) for row in rows]  # the IoU column
    assert all(0 <= s <= 1 for s in scores)
    assert f"{method} at denseblock3; score: mean IoU with the ground truth" in printed
    with pytest.raises(SystemExit):
        main([*command, "--betas", "0.1,-1"])
    assert "expected comma-separated numbers > 0; got '0.1,-1'" in capsys.readouterr().err
