"""The bad-input battery (benchmarks/bad_inputs.py): each of its cases gives a clear error whose
first line says what was expected, leaves no output behind, and spares the good inputs."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import bad_inputs

CASES = bad_inputs.cases()


def test_the_battery_has_at_least_60_distinct_inputs():
    assert len(CASES) >= 60
    assert len({(c.interface, c.given) for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case, run once in order in one prepared folder (later cases use earlier output)."""
    results = bad_inputs.run_all(tmp_path_factory.mktemp("battery"))
    return {(case.interface, case.given): outcome for case, outcome in results}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.interface}: {c.given}")
def test_bad_input_gives_a_clear_error(outcomes, case):
    outcome = outcomes[(case.interface, case.given)]
    assert outcome.problem is None, outcome
    assert case.expected in outcome.message, outcome
    if case.interface == "cli":
        assert outcome.code in (1, 2), outcome  # 1: some inputs failed, the others were done
    else:
        assert outcome.code not in ("returned", "AssertionError", "TypeError"), outcome


def test_the_table_lists_every_case(outcomes):
    results = [(case, outcomes[(case.interface, case.given)]) for case in CASES]
    text = bad_inputs.table(results)
    assert text.count("\n") == len(CASES) + 2
    documented = (Path(__file__).parents[1] / "docs" / "robustness.md").read_text()
    assert documented.split("<!-- table -->\n", 1)[1] == text  # the stored table is current
