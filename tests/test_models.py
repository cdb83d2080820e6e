import pytest
import torch

from ignite_app.models import build_model


@pytest.mark.parametrize("name", ["convnet", "net"])
def test_models_map_pixels_to_logits(name):
    model = build_model(name, (8, 12), 10, 0.5, 0.25).eval()
    pixels = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    assert model(pixels).shape == (3, 10)
    assert torch.equal(model(pixels), model(pixels.float()))


def test_convnet_kernels_set_channel_counts():
    model = build_model("convnet", (8, 12), 10, 0.5, 0.25)
    assert model.backbone.layer1[0].out_channels == 8
    assert model.backbone.layer2[0].in_channels == 8  # the tutorial hard-coded 16 here
    assert model.backbone.fc.in_features == 7 * 7 * 12


def test_normalization_is_in_the_model_and_not_in_the_state_dict():
    model = build_model("convnet", (16, 32), 10, 0.5, 0.25)
    assert not any(k.startswith("normalize") for k in model.state_dict())
    x = torch.full((1, 1, 28, 28), 127.5)
    assert torch.allclose(model.normalize(x), torch.zeros_like(x))
