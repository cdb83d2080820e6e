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


def test_convnet_pools_before_relu_bit_identically_to_the_tutorials_order():
    """The tutorial's block is conv -> ReLU -> pool; ours pools first (4x less ReLU work). Same bits, forward and
    backward, over a few Adam steps."""
    torch.manual_seed(0)
    ours = build_model("convnet", (8, 12), 10, 0.5, 0.25)
    tutorial = build_model("convnet", (8, 12), 10, 0.5, 0.25)
    tutorial.load_state_dict(ours.state_dict())
    for block in (tutorial.backbone.layer1, tutorial.backbone.layer2):
        block[1], block[2] = block[2], block[1]
    assert isinstance(tutorial.backbone.layer1[1], torch.nn.ReLU) and isinstance(ours.backbone.layer1[1], torch.nn.MaxPool2d)
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.01) for m in (ours, tutorial)]
    for step in range(3):
        pixels = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
        labels = torch.randint(0, 10, (16,))
        losses = []
        for model, optimizer in zip((ours, tutorial), optimizers):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(pixels), labels)
            loss.backward()
            optimizer.step()
            losses.append(loss)
        assert torch.equal(losses[0], losses[1]), step
    for a, b in zip(ours.parameters(), tutorial.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["convnet", "net"])
def test_channels_last_keeps_the_function_and_the_state_dict(name):
    torch.manual_seed(0)
    nchw = build_model(name, (8, 12), 10, 0.5, 0.25).eval()
    nhwc = build_model(name, (8, 12), 10, 0.5, 0.25, channels_last=True).eval()
    nhwc.load_state_dict(nchw.state_dict())
    assert nhwc.backbone.state_dict().keys() == nchw.backbone.state_dict().keys()
    conv_weight = [p for p in nhwc.parameters() if p.dim() == 4][-1]  # the first conv has 1 input channel: both
    assert conv_weight.is_contiguous(memory_format=torch.channels_last) and not conv_weight.is_contiguous()
    pixels = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    torch.testing.assert_close(nhwc(pixels), nchw(pixels), rtol=1e-4, atol=1e-4)
