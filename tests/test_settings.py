"""Settings: flags over WORKFLOWD_* environment over the TOML file over defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import serve_refused
from workflowd.cli import build_parser
from workflowd.domain.errors import InvalidRequest
from workflowd.settings import Settings


def test_precedence_flags_env_file_defaults(tmp_path: Path) -> None:
    config = tmp_path / "workflowd.toml"
    config.write_text(
        '[workflowd]\nlisten = "127.0.0.1:7001"\nhttp_listen = "127.0.0.1:7002"\n'
        'jobs_url = "http://127.0.0.1:7003"\nmax_tasks = 10\n'
    )
    env = {"WORKFLOWD_HTTP_LISTEN": "127.0.0.1:8002", "WORKFLOWD_MAX_TASKS": "20"}
    settings = Settings.load({"max_tasks": 30, "listen": None}, env, config)
    assert settings.listen == "127.0.0.1:7001"
    assert settings.http_listen == "127.0.0.1:8002"
    assert settings.jobs_url == "http://127.0.0.1:7003"
    assert settings.max_tasks == 30
    assert settings.data_dir == Path(".workflowd")
    assert not settings.embedded_dataplane


def test_booleans_from_the_environment() -> None:
    settings = Settings.load({}, {"WORKFLOWD_INSECURE": "true", "WORKFLOWD_LISTEN": "0.0.0.0:1"})
    assert settings.insecure


def test_the_web_page_is_served_unless_told_not_to() -> None:
    assert Settings.load({}, {}).web_enabled
    assert not Settings.load({}, {"WORKFLOWD_WEB_ENABLED": "false"}).web_enabled
    # `serve --no-web` gives the flag; without it the flag is unset (the default holds).
    assert build_parser().parse_args(["serve", "--no-web"]).web_enabled is False
    assert build_parser().parse_args(["serve"]).web_enabled is None


def test_metrics_alone_may_stay_beyond_loopback_beside_grpc_tls() -> None:
    tls = {"tls_cert": "/c.pem", "tls_key": "/k.pem", "tokens_file": "/t.toml"}
    beyond = {**tls, "http_listen": "0.0.0.0:9464"}
    with pytest.raises(InvalidRequest) as info:
        Settings.load(beyond, {})
    assert info.value.field == "http_listen"
    assert not Settings.load({**beyond, "web_enabled": False}, {}).web_enabled
    assert Settings.load({**tls, "http_listen": "127.0.0.1:9464"}, {}).web_enabled


def test_no_setting_can_switch_on_crash_points(tmp_path: Path) -> None:
    """Crash injection exists for the crash tests' own entry point only."""
    settings = Settings.load({}, {"WORKFLOWD_CRASH_POINTS": "after_submit"})
    assert not hasattr(settings, "crash_points")
    config = tmp_path / "workflowd.toml"
    config.write_text('crash_points = ["after_submit"]\n')
    with pytest.raises(InvalidRequest, match="unknown settings"):
        Settings.load({}, {}, config)


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        ({"listen": "0.0.0.0:50051"}, "listen"),
        ({"http_listen": "0.0.0.0:9464"}, "http_listen"),
        ({"dataplane_listen": "[::]:50052"}, "dataplane_listen"),
        ({"listen": "127.0.0.1"}, "listen"),
        ({"http_listen": "127.0.0.1:99999"}, "http_listen"),
        ({"max_tasks": "many"}, "max_tasks"),
        ({"log_format": "xml"}, "log_format"),
        ({"jobs_company": "acme"}, "jobs_company"),  # no remote jobs API to name it on
        ({"jobs_url": "http://127.0.0.1:9", "jobs_company": "Acme\n"}, "jobs_company"),
        (
            {"jobs_url": "http://127.0.0.1:9", "jobs_company": "acme", "tokens_file": "t.toml"},
            "jobs_company",
        ),
        ({"web_heartbeat_s": 0}, "web_heartbeat_s"),
    ],
)
def test_bad_settings_name_the_setting(flags: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        Settings.load(flags, {})
    assert info.value.field == field


def test_insecure_allows_public_addresses_and_a_remote_jobs_api_needs_no_plane_address() -> None:
    public = {"listen": "0.0.0.0:1", "http_listen": "0.0.0.0:2", "dataplane_listen": "0.0.0.0:3"}
    assert Settings.load({**public, "insecure": True}, {}).insecure
    remote = {"jobs_url": "http://jobs:80", "dataplane_listen": "0.0.0.0:3"}
    assert not Settings.load(remote, {}).embedded_dataplane


def test_unknown_key_in_the_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('lisen = "127.0.0.1:1"\n')
    with pytest.raises(InvalidRequest) as info:
        Settings.load({}, {}, config)
    assert "lisen" in info.value.message


@pytest.mark.parametrize(
    ("flag", "setting"),
    [
        ("--listen", "listen"),
        ("--http-listen", "http_listen"),
        ("--dataplane-listen", "dataplane_listen"),
    ],
)
async def test_serve_refuses_a_public_address_without_auth(
    tmp_path: Path, flag: str, setting: str
) -> None:
    said = await serve_refused(tmp_path, flag, "0.0.0.0:0")
    assert setting in said
    assert "not a loopback address" in said
    assert "--insecure" in said
    assert not (tmp_path / "workflowd.db").exists()


@pytest.mark.parametrize(
    "store",
    ["mysql://db/w", "/var/lib/workflowd.db", "sqlite://relative.db", "sqlite:relative.db"],
)
def test_a_store_url_must_be_sqlite_with_an_absolute_path_or_postgresql(store: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        Settings.load({"store": store}, {})
    assert info.value.field == "store"
    assert "sqlite:///ABSOLUTE/PATH or postgresql://" in info.value.message


def test_the_store_url_from_flag_or_environment(tmp_path: Path) -> None:
    assert Settings.load({}, {}).store == ""  # the SQLite file in the data directory
    env = {"WORKFLOWD_STORE": "postgresql://u@db:5432/w"}
    assert Settings.load({}, env).store == "postgresql://u@db:5432/w"
    flags = {"store": f"sqlite://{tmp_path}/w.db"}
    assert Settings.load(flags, env).store == f"sqlite://{tmp_path}/w.db"


async def test_serve_refuses_an_unknown_store_scheme_in_one_sentence(tmp_path: Path) -> None:
    said = await serve_refused(tmp_path, "--store", "mysql://admin:s3cret@db/w")
    assert said.startswith("workflowd: store: mysql scheme is not a store")
    assert "s3cret" not in said
    assert not (tmp_path / "workflowd.db").exists()


def test_quotas_from_flags_environment_and_file(tmp_path: Path) -> None:
    config = tmp_path / "workflowd.toml"
    config.write_text("[workflowd]\nquota_active_runs = 5\nquota_min_every_s = 300\n")
    env = {"WORKFLOWD_QUOTA_STORED_BYTES": "1000", "WORKFLOWD_QUOTA_MIN_EVERY_S": "120"}
    quotas = Settings.load({"quota_trigger_rate_per_s": 0}, env, config).quotas()
    assert quotas.active_runs == 5
    assert quotas.min_every_s == 120
    assert quotas.stored_bytes == 1000
    assert quotas.trigger_rate_per_s == 0  # off
    assert quotas.active_schedules == Settings().quota_active_schedules


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        ({"quota_active_runs": -1}, "quota_active_runs"),
        ({"quota_min_every_s": float("nan")}, "quota_min_every_s"),
        ({"quota_stored_bytes": "lots"}, "quota_stored_bytes"),
        ({"quota_trigger_burst": 0}, "quota_trigger_burst"),
    ],
)
def test_bad_quotas_name_the_setting(flags: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        Settings.load(flags, {})
    assert info.value.field == field


async def test_serve_refuses_a_negative_quota_in_one_sentence(tmp_path: Path) -> None:
    said = await serve_refused(tmp_path / "data", "--quota-dataset-bytes", "-5")
    assert "quota_dataset_bytes: must be 0 (no quota) or a positive number" in said


def test_the_default_retention_policy_from_the_file(tmp_path: Path) -> None:
    config = tmp_path / "workflowd.toml"
    config.write_text("retention_keep_days = 30\nretention_keep_failed_days = 90\n")
    policy = Settings.load({}, {}, config).retention_policy()
    assert (policy.keep_s, policy.keep_last, policy.keep_failed_s) == (30 * 86400, 0, 90 * 86400)
    assert Settings().retention_policy().empty  # by default nothing is deleted


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        ({"retention_keep_days": -1}, "retention_keep_days"),
        ({"retention_keep_last": -5}, "retention_keep_last"),
        (
            {"retention_keep_days": 10, "retention_keep_failed_days": 2},
            "retention_keep_failed_days",
        ),
        ({"retention_interval_s": 0}, "retention_interval_s"),
    ],
)
def test_bad_retention_settings_name_the_setting(flags: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        Settings.load(flags, {})
    assert info.value.field == field
