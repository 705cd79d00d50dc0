"""β calibration: the sweep reports both terms, compiles once, and scores the maps; a flat λ
warns."""

import warnings

import jax
import numpy as np
import pytest
from probes import LocalAndGlobalProbe, probe_setting

from iba_jax.attribute import IBAConfig, iba
from iba_jax.calibration import beta_markdown, beta_sweep, recommended_beta
from iba_jax.cli import main
from iba_jax.diagnostics import FlatLambdaWarning, lambda_range, warn_if_flat
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
        unroll=False,
        key=jax.random.key(3),
    )
    config = IBAConfig(steps=6, samples=2)
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
    maps, _ = run(IBAConfig(beta=10.0, steps=6, samples=2))
    assert points[2].score == pytest.approx(float(maps.sum()), rel=1e-6)
    table = beta_markdown(points)
    assert table.count("\n") == 4 and "| 0.001 |" in table
    with pytest.raises(ValueError, match=r"betas: expected values > 0; got -1"):
        beta_sweep(run, [-1], config)


def probe_iba(config):
    """IBA on the probe's local layer, two images: each a bright square of 4 of 64 cells whose
    features are 1 against a prior of N(0, 0.01), so the mean capacity starts at 313 nats, and
    the target's BCE (its logit the sum of the cells, 4) at 0.0186."""
    images, _, stats = probe_setting(2)
    probe = LocalAndGlobalProbe()
    return iba(
        probe, {}, stats["cells"], images, 0, layer="cells", config=config, key=jax.random.key(0)
    )


def test_a_flat_lambda_warns_and_a_spread_one_does_not():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, aux = probe_iba(IBAConfig(beta=0.001))  # β·information 0.31 vs 0.0186
    assert np.all(lambda_range(aux.lam) > 0.5)  # the model term steers some α up, others down
    # β = 0.01: β·information starts 170 times above the model term; Adam moves every α alike.
    expected = (
        r"flat λ at 'cells' in 2 of 2 images \(image 0: its middle 99.8 % spans 0.0\d\d < 0.04\)"
        r".* β·information was 3.13 nats against a model term of 0.0186\. Choose the layer"
    )
    with pytest.warns(FlatLambdaWarning, match=expected):
        _, flat = probe_iba(IBAConfig(beta=0.01))
    assert np.all(lambda_range(flat.lam) < 0.04)
    # Under a caller's jit (or sharded), the program computes the range and a callback warns.
    traced = lambda a: warn_if_flat("cells", a, 0.01) or a.lam.sum()
    with pytest.warns(FlatLambdaWarning, match=expected):
        jax.block_until_ready(jax.jit(traced)(flat))
        jax.effects_barrier()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jax.block_until_ready(jax.jit(traced)(aux))  # the spread one: no warning
        jax.effects_barrier()


def test_a_sweep_reports_the_lambda_range_without_warning_and_recommends_no_flat_beta():
    favour_large_beta = lambda maps: -float(maps.mean())  # fewer bits, higher score
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        points = beta_sweep(probe_iba, [0.001, 0.01], IBAConfig())
        scored = beta_sweep(probe_iba, [0.001, 0.01], IBAConfig(), score=favour_large_beta)
    spread, flat = points
    assert spread.lam_range > 0.5 and flat.lam_range < 0.04
    assert (spread.flat_images, flat.flat_images) == (0, 2)
    _, aux = probe_iba(IBAConfig(beta=0.001))
    assert spread.lam_range == pytest.approx(float(lambda_range(aux.lam).mean()), rel=1e-6)
    # The flat β has the better score and the larger β, and is never recommended.
    assert scored[1].score > scored[0].score
    assert recommended_beta(scored) == 0.001
    assert recommended_beta(points, min_spread=spread.lam_spread * 0.99) == 0.001
    assert recommended_beta(points, min_spread=min(spread.lam_spread * 1.01, 0.999)) is None
    with pytest.raises(ValueError, match=r"min_spread: expected a number in \(0, 1\); got 1.5"):
        recommended_beta(points, min_spread=1.5)


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
    assert "recommended β = " in printed or "no β recommended" in printed
    with pytest.raises(SystemExit):
        main([*command, "--betas", "0.1,-1"])
    assert "expected comma-separated numbers > 0; got '0.1,-1'" in capsys.readouterr().err


def test_the_command_scores_severity_maps_by_their_correlation(tmp_path, capsys):
    data = ["cxr_phantoms", "--config", "regression_128_mini", "--data-dir", str(tmp_path)]
    command = ["beta-sweep", "--model", "phantoms_reg", *data, "--limit", "2", "--betas", "0.1"]
    assert main([*command, "--method", "regression_iba_rm", "--score", "pcc"]) == 0
    printed = capsys.readouterr().out
    assert "score: mean Pearson correlation with the severity map" in printed
    (row,) = [line for line in printed.splitlines() if line.startswith("| 0.1 |")]
    assert -1 <= float(row.rstrip(" |").rsplit("|", 1)[1]) <= 1
    classification = ["cxr_phantoms", "--config", "classification_128_mini"]
    wrong = ["beta-sweep", "--model", "phantoms_cls", *classification, "--data-dir", str(tmp_path)]
    assert main([*wrong, "--limit", "2", "--score", "pcc"]) == 2
    refused = capsys.readouterr()
    assert "--score pcc: expected a data set with severity maps" in refused.err
    assert "compiling" not in refused.out  # refused before any attribution
