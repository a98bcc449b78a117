"""What ``bulletin serve`` decides before starting anything: parts, URLs, commands, environments, messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulletin.edge.automations import HEARTBEAT_SECONDS
from bulletin.edge.supervisor.plan import (
    Part,
    api_command,
    child_env,
    deploy_command,
    describe_exit,
    last_line,
    make_plan,
    pool_type,
    redact,
    server_command,
    server_env,
    unconfigured_triggers_line,
    worker_command,
)
from bulletin.errors import ConfigError
from bulletin.settings import PROJECT_ROOT, Settings
from bulletin.triggers import load_triggers


def plan_for(only: list[Part] | None = None, environ: dict[str, str] | None = None, **overrides: object):
    kwargs: dict = {
        "api_host": "127.0.0.1",
        "api_port": 8400,
        "prefect_port": 4200,
        "project_dir": PROJECT_ROOT,
        "home": Path("/srv/bulletin"),
        "environ": environ or {},
    }
    kwargs.update(overrides)
    return make_plan(only, **kwargs)


def test_everything_by_default_on_a_local_prefect_server() -> None:
    plan = plan_for()
    assert plan.parts == set(Part)
    assert plan.start_prefect
    assert plan.prefect_api_url == "http://127.0.0.1:4200/api"
    assert plan.prefect_ui_url == "http://127.0.0.1:4200"
    assert plan.api_url == "http://127.0.0.1:8400"
    assert plan.prefect_yaml == Path("/srv/bulletin/serve/prefect.yaml")
    assert plan.prefect_home == Path("/srv/bulletin/prefect")


def test_prefect_api_url_in_the_environment_is_used_instead_of_a_local_server() -> None:
    plan = plan_for(environ={"PREFECT_API_URL": "https://prefect.example.com/api/"})
    assert not plan.start_prefect
    assert plan.prefect_api_url == "https://prefect.example.com/api"
    assert plan.prefect_ui_url is None


def test_a_wildcard_bind_is_probed_on_loopback() -> None:
    assert plan_for(api_host="0.0.0.0").api_url == "http://127.0.0.1:8400"
    assert plan_for(api_host="::").api_url == "http://[::1]:8400"


@pytest.mark.parametrize(
    ("only", "overrides", "environ", "field", "words"),
    [
        ([Part.WORKER], {}, {}, "only", "--only worker needs a Prefect server"),
        ([Part.DEPLOY, Part.API], {}, {}, "only", "--only deploy needs a Prefect server"),
        ([Part.PREFECT], {}, {"PREFECT_API_URL": "http://x:4200/api"}, "only", "unset PREFECT_API_URL"),
        (None, {}, {"PREFECT_API_URL": "ftp://x/api"}, "PREFECT_API_URL", "must be an http(s) URL"),
        (None, {"api_port": 0}, {}, "port", "--port 0"),
        (None, {"api_port": 4200}, {}, "port", "both 4200"),
        (None, {"project_dir": Path("/")}, {}, "project_dir", "has no flows/deliver_report.py"),
    ],
)
def test_combinations_that_cannot_work_are_refused_naming_the_flag(
    only: list[Part] | None, overrides: dict, environ: dict[str, str], field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        plan_for(only, environ, **overrides)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_parts_without_prefect_need_no_project_dir() -> None:
    plan = plan_for([Part.PREFECT, Part.API], project_dir=Path("/"))
    assert plan.parts == {Part.PREFECT, Part.API}


def test_commands() -> None:
    prefect = ["/venv/bin/prefect"]
    assert server_command(prefect, 4201) == [*prefect, "server", "start", "--host", "127.0.0.1", "--port", "4201"]
    assert worker_command(prefect, "bulletin") == [
        *prefect,
        "worker",
        "start",
        "--pool",
        "bulletin",
        "--type",
        "process",
    ]
    assert deploy_command(prefect, Path("/h/serve/prefect.yaml")) == [
        *prefect,
        "deploy",
        "--all",
        "--no-prompt",
        "--prefect-file",
        "/h/serve/prefect.yaml",
    ]
    assert api_command(["py", "-m", "bulletin.edge.cli"], "0.0.0.0", 8401)[3:] == [
        "serve",
        "--only",
        "api",
        "--host",
        "0.0.0.0",
        "--port",
        "8401",
    ]


def test_child_env_points_every_child_at_the_server_with_absolute_settings(tmp_path: Path) -> None:
    settings = Settings(home=Path("rel-home"), reports_dir=Path("rel-reports"), warehouse_url="/w.duckdb")
    plan = plan_for(home=settings.home_dir)
    environ = {"PATH": "/bin", "BULLETIN_WAREHOUSE_URL": "/w.duckdb", "PREFECT_HOME": "/elsewhere"}
    env = child_env(environ, settings, plan)
    assert env["PATH"] == "/bin"
    assert env["BULLETIN_WAREHOUSE_URL"] == "/w.duckdb"
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert env["PREFECT_HOME"] == str(settings.home_dir / "prefect")
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["BULLETIN_PROJECT_DIR"] == str(PROJECT_ROOT)
    assert env["BULLETIN_HOME"] == str(settings.home_dir) and Path(env["BULLETIN_HOME"]).is_absolute()
    assert Path(env["BULLETIN_REPORTS_DIR"]).is_absolute() and env["BULLETIN_REPORTS_DIR"].endswith("rel-reports")
    assert "PREFECT_API_URL" not in server_env(env, plan)
    assert server_env(env, plan)["PREFECT_HOME"] == env["PREFECT_HOME"]


def test_child_env_keeps_the_users_prefect_home_for_an_external_server() -> None:
    environ = {"PREFECT_API_URL": "http://prefect:4200/api", "PREFECT_HOME": "/home/u/.prefect"}
    env = child_env(environ, Settings(), plan_for(environ=environ))
    assert env["PREFECT_HOME"] == "/home/u/.prefect"
    assert env["PREFECT_API_URL"] == "http://prefect:4200/api"


def test_child_env_turns_telemetry_off_unless_the_user_chose_otherwise() -> None:
    env = child_env({"PREFECT_SERVER_ANALYTICS_ENABLED": "true"}, Settings(), plan_for())
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"  # the user's explicit choice stays
    assert child_env({}, Settings(), plan_for())["DO_NOT_TRACK"] == "1"


def test_last_line_skips_boxes_and_blank_lines_and_hides_credentials() -> None:
    output = "starting\nboom: postgresql://bulletin:s3cret@db:5432/prefect refused\n╰──────╯\n\n"
    line = last_line(output)
    assert line == "boom: postgresql://***@db:5432/prefect refused"
    assert last_line("") == "no output"
    assert len(last_line("x" * 1000)) == 300


def test_redact_only_touches_userinfo() -> None:
    assert redact("http://127.0.0.1:4200/api") == "http://127.0.0.1:4200/api"
    assert redact("https://user:pw@host/x and s3://key@bucket") == "https://***@host/x and s3://***@bucket"


def test_pool_type_reads_the_inspect_json() -> None:
    assert pool_type('{\n  "name": "bulletin",\n  "type": "process"\n}\n') == "process"
    assert pool_type("Work pool 'bulletin' not found!") is None
    assert pool_type("{not json}") is None


def test_describe_exit() -> None:
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(-9) == "killed by SIGKILL"


def test_last_line_prefers_the_exception_over_prefects_closing_words() -> None:
    output = "Traceback (most recent call last):\n  File \"x.py\"\nSyntaxError: '(' was never closed\n"
    output += "An exception occurred.\n"
    assert last_line(output) == "SyntaxError: '(' was never closed"
    assert last_line("error: trigger 'x': no report 'y'\n") == "trigger 'x': no report 'y'"


def test_the_banner_names_the_shipped_triggers_whose_secret_is_unset() -> None:
    """A fresh `bulletin serve`: none of the shipped triggers' variables is set, and each is named with it."""
    triggers = load_triggers(PROJECT_ROOT / "deployments" / "triggers")
    line = unconfigured_triggers_line(triggers, {"DBT_WEBHOOK_SECRET": "s", "GITHUB_WEBHOOK_SECRET": "  "})
    named = [
        "bulletin-run-completed (set BULLETIN_RUN_EVENTS_SECRET)",
        "github-release (set GITHUB_WEBHOOK_SECRET)",
        "signed-refresh-request (set SIGNED_REQUEST_PUBLIC_KEY)",
    ]
    assert line == "  triggers      not configured, answered 503 until set: " + ", ".join(named)
    every = {"BULLETIN_RUN_EVENTS_SECRET", "DBT_WEBHOOK_SECRET", "GITHUB_WEBHOOK_SECRET", "SIGNED_REQUEST_PUBLIC_KEY"}
    assert unconfigured_triggers_line(triggers, dict.fromkeys(every, "x")) is None


def test_child_env_makes_flow_runs_send_heartbeats_the_automation_expects() -> None:
    assert child_env({}, Settings(), plan_for())["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_SECONDS)
    assert (
        child_env({"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "45"}, Settings(), plan_for())[
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
        ]
        == "45"
    )  # the operator's choice stands
