"""How the project installs: `handlers/` as `ignite_app.handlers` (no top-level `handlers` package in site-packages),
the entry-point group that names handlers, and the dependency floors."""
import subprocess
import sys
from importlib.metadata import entry_points, version

from helpers import ROOT
from ignite_app.plugins import ENTRY_POINT_GROUP, registered_handlers


def test_handlers_folder_installs_as_ignite_app_handlers_and_nothing_named_handlers(tmp_path):
    code = (
        "import importlib.util\n"
        "print(importlib.util.find_spec('ignite_app.handlers.hard_examples').origin)\n"  # found, not run: no torch
        "print(importlib.util.find_spec('handlers'))\n"
    )
    # outside the repository, with no PYTHONPATH: what the installed package provides
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}).stdout.splitlines()
    assert out == [str(ROOT / "handlers" / "hard_examples.py"), "None"]


def test_the_entry_point_group_names_the_built_in_handler():
    (ep,) = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == "hard-examples"]
    from ignite_app.handlers.hard_examples import HardExamplesTable

    assert ep.load() is HardExamplesTable and registered_handlers()["hard-examples"] == ep.value


def test_installed_ignite_is_at_least_the_floor_whose_wandb_logger_works_with_new_wandb():
    from ignite.handlers.wandb_logger import OutputHandler

    import configparser

    from packaging.requirements import Requirement
    from packaging.version import Version

    setup = configparser.ConfigParser(interpolation=None)
    setup.read(ROOT / "setup.cfg")
    requirements = [Requirement(line) for line in setup["options"]["install_requires"].splitlines()
                    if line.strip() and not line.strip().startswith("#")]
    (ignite,) = [r for r in requirements if r.name == "pytorch-ignite"]
    floors = [s.version for s in ignite.specifier if s.operator == ">="]
    assert floors == ["0.5.4"], ignite  # what the package declares, not only what this machine has installed
    assert Version(version("pytorch-ignite")) in ignite.specifier, ignite
    # the bug of the releases below the floor: OutputHandler passed Run.log(sync=...), gone since wandb 0.20
    assert "sync=" not in __import__("inspect").getsource(OutputHandler.__call__)


def test_ci_runs_the_readmes_two_quick_start_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start: two commands", 1)[1].split("\n## ", 1)[0]
    commands = [block.strip() for block in section.split("```bash")[1:]]
    commands = [c.split("```")[0].strip() for c in commands]
    assert len(commands) == 2 and all("\n" not in c for c in commands)  # two one-line, copy-pasteable commands
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert [line for line in ci if line in commands] == commands
    assert "scripts/train.py --dataset digits" in commands[0] and commands[1].endswith("-m pytest")
