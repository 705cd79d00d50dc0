"""Attribution sharded across 8 devices gives the single-device maps, for every method.

The device count of a process is fixed when JAX starts, so the test in the main run computes
the single-device maps (test_methods' programs: the compilation cache has them once a run),
then starts this file again under pytest in a process with 8 CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), where the tests marked
``eight_devices`` shard the same calls and compare.
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import with_devices
from jax.sharding import NamedSharding, PartitionSpec
from test_methods import NET, QUICK, every_method, method_inputs

from iba_jax import methods, sharding
from iba_jax.attribute import iba
from iba_jax.inputs import per_image_keys

EIGHT = jax.local_device_count() == 8
eight_devices = pytest.mark.skipif(not EIGHT, reason="runs in the 8-device process")
# Where the main run leaves its single-device maps for the 8-device process.
SINGLE_DEVICE_MAPS = "IBA_JAX_TEST_SINGLE_DEVICE_MAPS"


@pytest.mark.skipif(EIGHT, reason="this is the 8-device process")
def test_in_a_process_with_eight_devices(tmp_path):
    setting = method_inputs()
    single = {name: np.asarray(every_method(name, setting)) for name in methods.METHODS}
    np.savez(tmp_path / "single.npz", **single)
    env = {
        **with_devices(8),
        SINGLE_DEVICE_MAPS: str(tmp_path / "single.npz"),
    }
    command = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:xdist"]
    done = subprocess.run(
        [*command, "-p", "no:cacheprovider"],
        cwd=Path(__file__).parents[1],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert " passed" in done.stdout and " skipped" in done.stdout  # the inner tests did run


@pytest.fixture(scope="module")
def setting():
    return method_inputs()


@eight_devices
@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_sharded_maps_equal_the_single_device_maps(setting, name):
    if SINGLE_DEVICE_MAPS in os.environ:  # computed by the main run, on one device
        with np.load(os.environ[SINGLE_DEVICE_MAPS]) as single:
            alone = single[name]
    else:
        alone = np.asarray(every_method(name, setting))
    mesh = sharding.local_mesh()
    assert mesh.devices.size == 8
    shared = every_method(name, setting, mesh=mesh)  # 2 images on 8 devices: padded, then cut
    assert shared.shape == alone.shape == (2, 64, 64)
    np.testing.assert_allclose(shared, alone, rtol=1e-4, atol=1e-6 * np.abs(alone).max())
    assert np.ptp(np.asarray(shared)) > 0


@eight_devices
def test_every_device_works_on_its_own_images(setting):
    variables, images, stats = setting
    mesh = sharding.local_mesh()
    padded = sharding.pad_images((images, np.arange(2)), 8)
    assert padded[0].shape[0] == 8 and list(padded[1]) == [0, 1, 1, 1, 1, 1, 1, 1]
    text = (
        methods._sharded_maps.lower(
            variables,
            {"denseblock3": stats["denseblock3"]},
            padded[0],
            np.zeros(8, np.int32),
            jax.random.split(jax.random.key(0), 8),
            np.zeros(8, np.float32),
            name="iba",
            model=NET,
            settings=QUICK,
            mesh=mesh,
        )
        .compile()
        .as_text()
    )
    for collective in ("all-gather", "all-reduce", "all-to-all", "collective-permute"):
        assert collective not in text  # no communication between the devices


@eight_devices
def test_the_functional_api_follows_sharded_images(setting):
    variables, _, stats = setting
    images = jax.random.uniform(jax.random.key(4), (8, 64, 64, 1))
    run = lambda x: iba(
        NET, variables, stats["denseblock3"], x, 0, config=QUICK.iba, key=jax.random.key(5)
    )[0]
    spread = NamedSharding(sharding.local_mesh(), PartitionSpec(sharding.IMAGE_AXIS))
    shared = run(jax.device_put(images, spread))  # XLA partitions the program by the data
    assert shared.sharding.spec == PartitionSpec(sharding.IMAGE_AXIS)
    np.testing.assert_allclose(shared, run(images), rtol=1e-4, atol=1e-6)


def test_keys_and_meshes_are_checked():
    keys = per_image_keys(jax.random.key(0), 3)
    assert keys.shape == (3,)
    assert per_image_keys(keys, 3) is not None
    with pytest.raises(ValueError, match=r"key: expected one key or one key per image \(4\)"):
        per_image_keys(keys, 4)
    with pytest.raises(ValueError, match=r"mesh: expected a jax\.sharding\.Mesh with an 'images'"):
        sharding.check_mesh(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("batch",)))
