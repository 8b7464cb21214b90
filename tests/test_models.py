import pytest
import torch

from lib.config import ConfigError
from lib.models import MODELS, build_model, count_parameters


@pytest.mark.parametrize("name,spec_shape,n_scalars,params", [
    ("cnn", [1, 64, 63], 0, (0.05e6, 0.5e6)),
    ("cnn8", [9, 128, 63], 36, (1.5e6, 2.9e6)),   # the seed's CNN8: 2.43 M with its own head
    ("vgg", [9, 128, 63], 36, (7.5e6, 8.8e6)),    # the seed's VGG: about 8.15 M
])
def test_forward_shapes_and_sizes(name, spec_shape, n_scalars, params):
    manifest = {"spec_shape": spec_shape, "n_scalars": n_scalars}
    model = build_model({"name": name, "params": {}}, manifest, n_outputs=3).eval()
    x, s = torch.randn(2, *spec_shape), torch.randn(2, n_scalars)
    assert model(x, s).shape == (2, 3)
    lo, hi = params
    assert lo < count_parameters(model) < hi


def test_normalisation_is_applied_and_saved():
    model = build_model({"name": "cnn", "params": {}}, {"spec_shape": [2, 16, 16], "n_scalars": 2}, 1).eval()
    x, s = torch.randn(4, 2, 16, 16), torch.randn(4, 2)
    before = model(x, s)
    model.set_normalisation([10.0, -3.0], [2.0, 5.0], [1.0, 1.0], [3.0, 3.0])
    shifted = model(x * torch.tensor([2.0, 5.0]).view(1, 2, 1, 1) + torch.tensor([10.0, -3.0]).view(1, 2, 1, 1), s * 3 + 1)
    torch.testing.assert_close(before, shifted, atol=1e-4, rtol=1e-4)
    assert "spec_mean" in model.state_dict() and "scalar_std" in model.state_dict()


def test_unknown_model_lists_known_names():
    with pytest.raises(ConfigError, match="known: cnn, cnn8, vgg"):
        MODELS.get("resnet")
