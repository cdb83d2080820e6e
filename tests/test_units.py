"""In-process unit tests of the small parts: lr schedules, gradient clipping, --handler spec parsing, the images
the ONNX verification gets from a tiny validation split."""
import math

import pytest
import torch
from ignite.engine import Engine, Events

from ignite_app.engines import GradNormClipper
from ignite_app.errors import UserError
from ignite_app.plugins import parse_handler_spec
from ignite_app.schedules import create_lr_scheduler


def lr_curve(name: str, iterations: int = 20, epoch_length: int = 5, **kwargs) -> list[float]:
    """The lr each iteration sees, with the scheduler attached as attach_handlers does (ITERATION_STARTED)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = create_lr_scheduler(name, optimizer, 0.1, iterations, epoch_length, **kwargs)
    engine = Engine(lambda e, b: optimizer.param_groups[0]["lr"])
    if scheduler is not None:
        engine.add_event_handler(Events.ITERATION_STARTED, scheduler)
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.output))
    engine.run(range(epoch_length), max_epochs=iterations // epoch_length)
    return seen


def test_no_schedule_is_none_and_the_lr_stays():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert create_lr_scheduler("none", optimizer, 0.1, 20, 5) is None
    assert lr_curve("none") == [0.1] * 20


def test_cosine_with_warmup_rises_linearly_then_falls_to_zero():
    curve = lr_curve("cosine", warmup_iterations=5)
    assert curve[:5] == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])
    assert all(a >= b for a, b in zip(curve[4:], curve[5:])) and curve[-1] < 0.01


def test_step_multiplies_by_gamma_every_n_epochs():
    curve = lr_curve("step", step_epochs=2, gamma=0.5)
    assert curve[0] == curve[9] == pytest.approx(0.1) and curve[10] == curve[19] == pytest.approx(0.05)


def test_onecycle_peaks_inside_the_run():
    curve = lr_curve("onecycle")
    top = curve.index(max(curve))
    assert 0 < top < len(curve) - 1 and max(curve) == pytest.approx(0.1, rel=0.05) and curve[-1] < curve[0]


def test_unknown_schedule_is_a_value_error():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="unknown lr schedule 'linear'"):
        create_lr_scheduler("linear", optimizer, 0.1, 20, 5)


def test_grad_norm_clipper_clips_before_the_step_and_keeps_the_norm():
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    clipper = GradNormClipper(optimizer, max_norm=1.0)
    assert math.isnan(clipper.last_norm)
    weight.grad = torch.tensor([3.0, 4.0])  # norm 5
    optimizer.step()
    assert clipper.last_norm == pytest.approx(5.0)
    assert torch.allclose(weight.detach(), torch.tensor([-0.6, -0.8]))  # the clipped gradient was applied
    with pytest.raises(ValueError, match="max_norm must be positive"):
        GradNormClipper(optimizer, 0.0)


@pytest.mark.parametrize("text, expected", [
    ("mod:fn", ("mod:fn", {})),
    ('mod:fn {"every": 2, "name": "x y"}', ("mod:fn", {"every": 2, "name": "x y"})),
    ("path/f.py:fn every=2 ratio=0.5 on=true tags=[a,b] none=null", (
        "path/f.py:fn", {"every": 2, "ratio": 0.5, "on": True, "tags": ["a", "b"], "none": None})),
    ("mod:fn 'key=custom seen' \"tags=['a', 'b c']\"", ("mod:fn", {"key": "custom seen", "tags": ["a", "b c"]})),
])
def test_handler_spec_parsing(text, expected):
    assert parse_handler_spec(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("mod:fn {not json", "not valid JSON"), ("mod:fn [1, 2]", "key=value"), ('mod:fn {"a": 1', "not valid JSON"),
    ("mod:fn every", "must look like key=value"), ("mod:fn =2", "must look like key=value"),
    ("mod:fn name=it's", "quote values with spaces"),
])
def test_bad_handler_specs(text, fragment):
    with pytest.raises(UserError, match=fragment):
        parse_handler_spec(text)


def test_handler_args_from_the_command_line_keep_their_spaces():
    from ignite_app.cli import parse

    config = parse(["--handler", "mod:fn", "--handler-arg", "key=custom seen", "--handler-arg", "every=2"])
    assert parse_handler_spec(config.handler[0]) == ("mod:fn", {"key": "custom seen", "every": 2})


@pytest.mark.parametrize("env_mode, expected", [("dryrun", "offline"), ("OFFLINE", "offline"), ("disabled", "disabled"),
                                                ("", "offline")])
def test_wandb_mode_from_the_environment(env_mode, expected, tmp_path):
    from ignite_app.tracking import resolve_mode

    assert resolve_mode("auto", {"WANDB_MODE": env_mode, "NETRC": str(tmp_path / "none")}) == expected


@pytest.mark.parametrize("requested", ["auto", "offline", "disabled"])
def test_an_unknown_wandb_mode_in_the_environment_is_refused_whatever_the_flag(requested):
    from ignite_app.tracking import resolve_mode

    with pytest.raises(UserError, match="WANDB_MODE='cloud' is not a W&B mode; set it to one of online, offline, disabled"):
        resolve_mode(requested, {"WANDB_MODE": "cloud"})


def test_rng_states_round_trip_python_numpy_and_torch_through_a_weights_only_file():
    import io
    import random

    import numpy as np

    from ignite_app.state import RNGStates

    def draw():
        return random.random(), np.random.rand(3).tolist(), float(np.random.randn()), torch.rand(3).tolist()

    rng = RNGStates()
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state: it must round-trip too
    buffer = io.BytesIO()
    torch.save(rng.state_dict(), buffer)
    first = draw()
    random.seed(4), np.random.seed(4), torch.manual_seed(4)  # anything in between
    buffer.seek(0)
    rng.load_state_dict(torch.load(buffer, weights_only=True))  # as a checkpoint loads it: no arbitrary unpickling
    assert draw() == first and rng.saved_world_size == 1


def test_a_tiny_validation_split_is_enough_for_the_onnx_verification(tmp_path):
    """--val-fraction 0.02 on digits leaves 29 validation images, fewer than the verification's largest batch (37):
    it used to pass the start-up checks and then stop the run with a traceback from the ONNX handler. The split check
    accepts it, and verification_images repeats validation and test images up to the count the handler needs."""
    from ignite_app.app import check_split_sizes
    from ignite_app.config import ONNX_VERIFY_BATCH_SIZES, Config
    from ignite_app.data import load_splits, verification_images
    from ignite_app.handlers.onnx_export import OnnxExportHandler

    config = Config(dataset="digits", val_fraction=0.02)
    splits = load_splits(config.dataset, None, config.val_fraction, config.seed)
    needed = max(ONNX_VERIFY_BATCH_SIZES)
    assert 0 < len(splits.val) < needed
    check_split_sizes(config, splits)  # no UserError
    images = verification_images(splits)
    assert len(images) >= needed and images.shape[1:] == splits.val.images.shape[1:]
    assert torch.equal(images[: len(splits.val)], splits.val.images)  # the validation images first
    OnnxExportHandler(torch.nn.Identity(), images, tmp_path)  # what raised ValueError: too few images to verify
    one = type(splits)(splits.train, splits.val.subset(torch.arange(1)), splits.test.subset(torch.arange(0)),
                       splits.info, splits.source)
    assert len(verification_images(one, needed)) == needed  # one image, repeated


def test_the_collector_is_paused_for_start_up_and_restored_as_it_was():
    """collection.pause/resume (main.train, App.run): off in between, on again after, and left off for a caller
    that had turned it off itself; resume without a pause changes nothing."""
    import gc

    from ignite_app import collection

    assert gc.isenabled()
    collection.pause(freeze_on_resume=False)
    assert not gc.isenabled()
    collection.resume()
    assert gc.isenabled()
    collection.resume()
    assert gc.isenabled()
    gc.disable()
    try:
        collection.pause(freeze_on_resume=False)
        collection.resume()
        assert not gc.isenabled()
    finally:
        gc.enable()
