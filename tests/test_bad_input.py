"""Every bad input a user can give, from every source (flags, --config files, the environment, the companion
scripts): exit code 2, a message that names the problem, no traceback, and nothing written (neither the output
directory nor the W&B directory changes). In-process (`main(argv)`), so the whole table stays in the fast tier."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, clean_env
from ignite_app.export import export
from ignite_app.main import guarded, main
from ignite_app.predict import predict

DIGITS = ["--dataset", "digits", "--epochs", "1", "--no-progress-bar"]
USER_HANDLERS = ROOT / "tests" / "user_handlers.py"


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A clean environment (no W&B credentials or mode), W&B writing under tmp_path/wandb, cwd tmp_path; an output
    directory with one earlier run in it, which must stay as it is."""
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    for key, value in clean_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "earlier").mkdir(parents=True)
    (tmp_path / "runs" / "earlier" / "config.yaml").write_text("epochs: 1\n")
    (tmp_path / "wandb").mkdir()
    return tmp_path


def expect_user_error(run, tmp_path: Path, capsys, fragment: str) -> str:
    before = snapshot(tmp_path)
    code = run()
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err, err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before  # nothing written: not the output dir, not the W&B dir, nothing else
    return err


# ------------------------------------------------------------------ flags

FLAG_CASES = [
    (["--seed", "-5"], "--seed must be at least 0, got -5"),
    (["--run-id", "a/b"], "--run-id 'a/b' cannot be a W&B run id"),
    (["--run-id", "earlier two"], "--run-id 'earlier two' cannot be a W&B run id"),
    (["--seed", str(2**32)], "--seed must be at most 4294967295"),
    (["--epochs", "1.7"], "--epochs must be a whole number, got 1.7"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "fast"], "--lr must be a number, got 'fast'"),
    (["--dataset", "imagenet"], "--dataset must be one of mnist, fashion-mnist, digits, cifar10, imagefolder, got 'imagenet'"),
    (["--dataset", "mnist", "--data-dir", "EMPTY"], "Could not find the mnist dataset"),
    (["--wandb-mode", "online"], "no API key is configured"),
    (["--kernels", "16", "x"], "--kernels must be a whole number, got 'x'"),
    (["--progress-bar", "maybe"], "--progress-bar must be true or false, got 'maybe'"),
    (["--preset", "slow"], "--preset must be one of fast, got 'slow'"),
    (["--onnx-opset", "17"], "the dynamo exporter writes opsets 18 to 23, not --onnx-opset 17"),
    (["--onnx-opset", "7"], "use the torchscript exporter for older opsets"),
    (["--onnx-opset", "24", "--onnx-exporter", "torchscript"], "--onnx-opset must be at most 23"),
    (["--onnx-exporter", "tensorrt"], "--onnx-exporter must be one of dynamo, torchscript"),
    (["--resume", "x", "--auto-resume"], "--resume and --auto-resume cannot be used together"),
    (["--output-dir", "a-file"], "--output-dir a-file is a file, not a directory"),
    (["--output-dir", "a-file/runs"], "its parent a-file is a file"),
    (["--val-fraction", "0.9999"], "leaves no training images"),
    (["--handler", "hard-examples", "--handler-arg", "evry=2"], "unexpected keyword argument 'evry' (it takes every, count;"),
    (["--handler", "hard-examples", "--handler-arg", "every=0"], "every must be a whole number of at least 1, got 0"),
    (["--handler", "hard-examples", "--handler-arg", "every=often"], "every must be int, got 'often'"),
    (["--handler", f"{USER_HANDLERS}:count_epochs", "--handler-arg", "kee=x"],
     "unexpected keyword argument 'kee' (it takes key; a handler is called as fn(app, **kwargs))"),
    (["--handler", "no-such-handler"], "no handler of that name"),
    (["--handler", "no_such_module_xyz:attach"], "cannot import module 'no_such_module_xyz'"),
    (["--handler", "missing/file.py:attach"], "the file missing/file.py does not exist"),
    (["--handler", f"{USER_HANDLERS}:no_such_function"], "has no attribute 'no_such_function'"),
    (["--handler", f"{USER_HANDLERS}:NOT_CALLABLE"], "is a int, not a callable"),
    (["--handler", f"{USER_HANDLERS}:count_epochs {{not json"], "not valid JSON"),
    (["--handler-arg", "x=1"], "--handler-arg must follow a --handler"),
    (["--wandb-project", "a/b"], "--wandb-project (or $WANDB_PROJECT): W&B refuses it (Invalid project name 'a/b'"),
    (["--wandb-tags", "ok", "x" * 65], "--wandb-tags: W&B refuses it (Tag"),
    (["--model", "convnet", "--pretrained"], "--pretrained needs a torchvision model (e.g. --model resnet18); convnet has"),
    (["--model", "net", "--pretrained"], "--pretrained needs a torchvision model (e.g. --model resnet18); net has no"),
    (["--accumulation-steps", "3", "--checkpoint-every", "5"],
     "--checkpoint-every 5 is not a multiple of --accumulation-steps 3"),
]


@pytest.mark.parametrize("args, fragment", FLAG_CASES, ids=[" ".join(a)[:40] for a, _ in FLAG_CASES])
def test_bad_flag(isolated, capsys, args, fragment):
    (isolated / "a-file").write_text("not a directory")
    (isolated / "EMPTY").mkdir()
    expect_user_error(lambda: main([*DIGITS, *args]), isolated, capsys, fragment)


def test_argparse_errors_show_the_usage_line_not_the_usage_block(isolated, capsys):
    err = expect_user_error(lambda: main(["--epoch", "3"]), isolated, capsys, "unrecognized arguments: --epoch 3")
    assert err.splitlines() == ["usage: train.py [options]  (all options: train.py --help)",
                                "train.py: error: unrecognized arguments: --epoch 3"]


# ------------------------------------------------------------------ --config files

CONFIG_CASES = [
    ("dataset: imagenet\n", "dataset in {path} must be one of mnist, fashion-mnist, digits, cifar10, imagefolder, got 'imagenet'"),
    ("model: resnet\n", "--model resnet: no such network"),
    ("optimizer: lamb\n", "optimizer in {path} must be one of adam, adamw, sgd, got 'lamb'"),
    ("watch: everything\n", "watch in {path} must be one of off, gradients, parameters, all"),
    ("wandb_mode: cloud\n", "wandb_mode in {path} must be one of auto, online, offline, disabled, got 'cloud'"),
    ("onnx_exporter: tensorrt\n", "onnx_exporter in {path} must be one of dynamo, torchscript"),
    ("preset: slow\n", "preset in {path} must be one of fast, got 'slow'"),
    ("epochs: 1.7\n", "epochs in {path} must be a whole number, got 1.7"),
    ("epochs: '3'\nlr: [1]\n", "lr in {path} must be a number, got [1]"),
    ("kernels: [16, 2.5]\n", "kernels in {path} must be a whole number, got 2.5"),
    ("onnx: maybe\n", "onnx in {path} must be true or false, got 'maybe'"),
    ("seed: -1\n", "seed in {path} must be at least 0, got -1"),
    ("batch-size: 16\nbatch_size: 32\n", "sets batch_size twice, as 'batch-size' and 'batch_size'"),
    ("epochs: 1\nepochs: 2\n", "the key 'epochs' appears twice"),
    ("epochz: 3\n", "unknown option(s): epochz"),
    ("- epochs\n", "must hold a mapping of option names to values, not list"),
    ("epochs: [\n", "is not valid YAML"),
    ("handler: 5\n", "handler in {path} must be text or a list of texts (one per entry), got 5"),
    ("handler: {hard-examples: {every: 2}}\n", "handler in {path} must be text or a list of texts"),
    ("handler: [hard-examples, 3]\n", "handler in {path} must be text (one per entry), got 3"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not a UTF-8 text file"),
]


@pytest.mark.parametrize("content, fragment", CONFIG_CASES, ids=[str(c)[:30] for c, _ in CONFIG_CASES])
def test_bad_config_file(isolated, capsys, content, fragment):
    path = isolated / "bad.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    fragment = fragment.format(path=path)
    expect_user_error(lambda: main(["--config", str(path)]), isolated, capsys, fragment)


def test_missing_config_file(isolated, capsys):
    expect_user_error(lambda: main(["--config", "missing.yaml"]), isolated, capsys, "Cannot read the config file")


# ------------------------------------------------------------------ environment


def test_bogus_wandb_mode_in_the_environment(isolated, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "bogus")
    expect_user_error(lambda: main(DIGITS), isolated, capsys, "WANDB_MODE='bogus' is not a W&B mode")


def test_bad_wandb_project_in_the_environment(isolated, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "team/project")
    expect_user_error(lambda: main(DIGITS), isolated, capsys, "Invalid project name 'team/project'")


@pytest.mark.parametrize("where, fragment", [
    ("a-file", "WANDB_DIR={path!r} points at a file"),
    ("a-file/wandb", "WANDB_DIR={path!r} points at a file"),
])
def test_wandb_dir_that_is_not_a_directory(isolated, capsys, monkeypatch, where, fragment):
    """W&B itself only warns and writes the run under /tmp, where neither the user nor a resume looks."""
    (isolated / "a-file").write_text("not a directory")
    (isolated / "EMPTY").mkdir()
    path = str(isolated / where)
    monkeypatch.setenv("WANDB_DIR", path)
    expect_user_error(lambda: main(DIGITS), isolated, capsys, fragment.format(path=path))


# ------------------------------------------------------------------ companion scripts


@pytest.fixture
def foreign_onnx(isolated) -> Path:
    """Another project's model: a float [N, 3, 32, 32] input."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["out"])], "foreign", [x], [y])
    path = isolated / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


SCRIPT_CASES = [
    ("predict", ["m.onnx", "--split", "test", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    ("predict", ["m.onnx", "--split", "test", "--batch-size", "-1"], "--batch-size must be at least 1, got -1"),
    ("predict", ["m.onnx", "--split", "test", "--dataset", "imagenet"], "--dataset must be one of mnist"),
    ("predict", ["m.onnx", "--split", "test", "--val-fraction", "2"], "--val-fraction must be less than 1.0"),
    # argparse's own errors: the one-line usage, then the error (not the usage block)
    ("predict", ["m.onnx", "--split", "every"],
     "usage: predict.py MODEL.onnx [IMAGE|DIR ...] [--split {train,val,test}] [options]\n"
     "predict.py: error: argument --split: invalid choice: 'every'"),
    ("predict", ["FOREIGN", "--split", "test"], "is not a model this script can run: it takes image tensor(float)"),
    ("export", ["--checkpoint", "runs", "--output", "m.onnx", "--opset", "5"], "--opset must be at least 7, got 5"),
    ("export", ["--checkpoint", "runs", "--output", "m.onnx", "--opset", "17"],
     "The dynamo exporter writes opsets 18 to 23, not --opset 17"),
    ("export", ["--checkpoint", "runs", "--output", "runs"], "--output runs is a directory"),
    ("export", ["--checkpoint", "runs", "--output", "m.onnx", "--exporter", "tensorrt"], "--exporter must be one of"),
    ("export", ["--checkpoint", "runs", "--output", "m.onnx", "--force", "yes"],
     "usage: export_onnx.py --checkpoint SPEC --output FILE.onnx [options]\n"
     "export_onnx.py: error: unrecognized arguments: yes"),
]


@pytest.mark.parametrize("script, args, fragment", SCRIPT_CASES, ids=[f"{s} {' '.join(a)}"[:50] for s, a, _ in SCRIPT_CASES])
def test_bad_companion_script_input(isolated, capsys, foreign_onnx, script, args, fragment):
    args = [str(foreign_onnx) if a == "FOREIGN" else a for a in args]
    body = {"predict": predict, "export": export}[script]
    prog = {"predict": "predict.py", "export": "export_onnx.py"}[script]
    err = expect_user_error(lambda: guarded(prog, lambda: body(args)), isolated, capsys, fragment)
    if fragment.startswith("usage:"):
        assert len(err.splitlines()) == 2, err  # nothing else: not argparse's whole usage block


# ------------------------------------------------------------------ one subprocess per script: the exit code


@pytest.mark.parametrize("script, args, fragment", [
    ("train.py", ["--seed", "-5"], "--seed must be at least 0"),
    ("predict.py", ["m.onnx", "--batch-size", "0"], "--batch-size must be at least 1"),
    ("export_onnx.py", ["--checkpoint", "x", "--output", "m.onnx", "--opset", "5"], "--opset must be at least 7"),
])
def test_scripts_exit_2_without_a_traceback(tmp_path, script, args, fragment):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=tmp_path,
                          env=clean_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []
