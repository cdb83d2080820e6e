"""W&B mode resolution: WANDB_MODE wins, then online with credentials, else offline; never a login prompt."""
import pytest

from ignite_app.errors import UserError
from ignite_app.tracking import api_key_configured, resolve_mode


def env(tmp_path, **extra):
    return {"NETRC": str(tmp_path / "no-netrc"), **extra}


def test_no_credentials_means_offline(tmp_path):
    assert not api_key_configured(env(tmp_path))
    assert resolve_mode("auto", env(tmp_path)) == "offline"


@pytest.mark.parametrize("extra", [{"WANDB_API_KEY": "x" * 40}, {"WANDB_IDENTITY_TOKEN_FILE": "/var/run/token"}])
def test_credentials_from_the_environment_mean_online(tmp_path, extra):
    assert resolve_mode("auto", env(tmp_path, **extra)) == "online"


def test_netrc_entry_for_the_wandb_host(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert api_key_configured({"NETRC": str(netrc)})
    assert not api_key_configured({"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.com"})


@pytest.mark.parametrize("value, mode", [("offline", "offline"), ("dryrun", "offline"), ("disabled", "disabled")])
def test_wandb_mode_environment_wins_over_credentials(tmp_path, value, mode):
    assert resolve_mode("auto", env(tmp_path, WANDB_MODE=value, WANDB_API_KEY="x" * 40)) == mode


def test_explicit_online_without_credentials_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no API key is configured"):
        resolve_mode("online", env(tmp_path))
    assert resolve_mode("offline", env(tmp_path, WANDB_API_KEY="x" * 40)) == "offline"


@pytest.mark.parametrize("value, expected", [("OFFLINE", "offline"), (" offline ", "offline"), ("Disabled", "disabled"),
                                             ("", None), ("  ", None), ("dryrun", "dryrun")])
def test_wandb_mode_spellings_we_accept_are_handed_to_wandb_as_it_reads_them(tmp_path, value, expected):
    """WANDB_MODE=OFFLINE (or empty) passed our check, then failed W&B's own Settings validation inside wandb.init:
    a pydantic traceback, exit 1, after the run directory was written."""
    import wandb

    environ = env(tmp_path, WANDB_MODE=value)
    resolve_mode("auto", environ)
    assert environ.get("WANDB_MODE") == expected
    settings = wandb.Settings()
    settings.update_from_env_vars(environ)  # what wandb.init does with the process environment
    assert settings.mode == (expected or "online")
