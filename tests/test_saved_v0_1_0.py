"""`.keras` files saved by kerasdistill 0.1.0 (TensorFlow) load under the
current backend with the same outputs, and train on.

The files in `tests/fixtures/v0_1_0/` were written by
`tests/fixtures/v0_1_0/make_fixtures.py` with the 0.1.0 release."""

import pathlib

import keras
import numpy as np
import pytest

import kerasdistill as kd

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "v0_1_0"
# The files were written with Keras 3.15.1, whose layer configs older Keras
# cannot read (e.g. Dense's `quantization_config`, new in 3.15).
pytestmark = pytest.mark.skipif(
    tuple(int(p) for p in keras.__version__.split(".")[:2]) < (3, 15),
    reason=f"fixtures written with Keras 3.15.1; Keras {keras.__version__} is older",
)
NAMES = [
    "distiller_logits_features",
    "distiller_regression",
    "distiller_dkd_dist",
    "self_distiller_ema",
]


@pytest.mark.parametrize("name", NAMES)
def test_a_v0_1_0_file_loads_with_the_same_outputs(name):
    x = np.load(FIXTURES / "x.npy")
    model = keras.saving.load_model(FIXTURES / f"{name}.keras")
    assert isinstance(model, kd.Distiller)
    np.testing.assert_allclose(
        model.predict(x, verbose=0),
        np.load(FIXTURES / f"{name}.npy"),
        rtol=1e-5,
        atol=1e-6,
    )
    y = (
        (x[:, 0] - 2 * x[:, 1])
        if name == "distiller_regression"
        else np.argmax(x[:, :3], 1)
    )
    history = model.fit(x, y, epochs=1, verbose=0).history  # compiled from the file
    assert np.isfinite(history["loss"][0])
