"""Static checks of docker-compose.yaml, the Dockerfiles and .env.example (no Docker engine)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from secml.settings import ROOT, Settings

COMPOSE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA = Path(__file__).with_name("compose-spec.json")
DOCKERFILES = [
    ROOT / "training" / "Dockerfile",
    ROOT / "serving" / "Dockerfile",
    ROOT / "ui" / "Dockerfile",
]
# Interpolations ${VAR}, ${VAR:-x}, ${VAR:?msg}; "$$" is a literal dollar for the container shell.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])[^}]*)?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|API_KEY|ACCESS_KEY|ROOT_USER")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as loaded by YAML (merge keys resolved)."""
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _env_example_names() -> set[str]:
    """Variable names in .env.example, set (NAME=) or shown commented out (# NAME=)."""
    names = set()
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            names.add(m.group(1))
    return names


def _interpolate(m: re.Match[str]) -> str:
    """What compose substitutes: the default of ${VAR:-x}, a stand-in secret for ${VAR:?}."""
    whole = m.group(0)
    if m.group(2) in (":-", "-"):
        return whole[whole.index("-") + 1 : -1]
    return "a-real-secret-from-env"


def _one_shot(svc: dict[str, Any]) -> bool:
    """A job that runs once and exits (restart: "no"), e.g. bucket creation."""
    return svc.get("restart") == "no"


def test_schema_file_is_small_and_draft07() -> None:
    """The vendored Compose schema is the draft-07 one and well under the 2 MiB limit."""
    assert SCHEMA.stat().st_size < 2 * 1024 * 1024
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert "draft-07" in schema["$schema"]


def test_valid_against_compose_spec(compose: dict[str, Any]) -> None:
    """docker-compose.yaml validates against the Compose Specification's JSON schema."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    # The validator is not vacuous: a broken copy fails.
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["ports"] = 8086
    broken["services"]["gateway"]["healthcheck"]["interval"] = {"seconds": 10}
    assert len(list(validator.iter_errors(broken))) >= 2


def test_expected_services(services: dict[str, dict[str, Any]]) -> None:
    """Every service the production stack needs is there."""
    expected = {
        "postgres", "minio", "minio-create-buckets", "mlflow", "prefect-server", "prefect-worker",
        "triton-cpu", "triton-gpu", "gateway", "ui", "kafka", "consumer", "prefect-exporter",
        "prometheus", "grafana",
    }  # fmt: skip
    assert expected <= set(services)


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    """Every service names an image with an explicit tag that is not ``latest``."""
    for name, svc in services.items():
        image = svc.get("image")
        assert image, f"service {name} has no image"
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"service {name}: image {image!r} has no tag"
        assert tag != "latest", f"service {name}: image {image!r} uses latest"
        assert re.search(r"\d", tag), f"service {name}: tag {tag!r} is not a version"


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    """Every service except one-shot jobs has a healthcheck that runs a command."""
    for name, svc in services.items():
        if _one_shot(svc):
            continue
        check = svc.get("healthcheck")
        assert check and not check.get("disable"), f"service {name} has no healthcheck"
        test = check["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: bad healthcheck {test}"


def test_depends_on_waits_for_health(services: dict[str, dict[str, Any]]) -> None:
    """depends_on uses conditions: healthy services, or one-shot jobs that completed."""
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"service {name}: depends_on must use conditions"
        for dep, spec in deps.items():
            assert dep in services, f"service {name} depends on unknown service {dep}"
            if _one_shot(services[dep]):
                assert spec["condition"] == "service_completed_successfully", (name, dep)
            else:
                assert spec["condition"] == "service_healthy", f"{name} -> {dep}: {spec}"
                assert "healthcheck" in services[dep], f"{name} waits on {dep} without healthcheck"


def test_ports_bind_localhost(services: dict[str, dict[str, Any]]) -> None:
    """Every published port binds 127.0.0.1 on the host."""
    for name, svc in services.items():
        for port in svc.get("ports", []):
            text = (
                port if isinstance(port, str) else f"{port.get('host_ip')}:{port.get('published')}"
            )
            assert str(text).startswith("127.0.0.1:"), f"service {name}: port {port} not localhost"


def test_secrets_are_required_variables(compose: dict[str, Any]) -> None:
    """Secret-looking settings come from ${VAR:?...}; no literal secret in the file."""
    raw = COMPOSE.read_text(encoding="utf-8")
    for m in VARIABLE.finditer(raw):
        name, op = m.group(1), m.group(2)
        if SECRET_NAME.search(name):
            assert op == ":?", f"secret variable {name} must be ${{{name}:?...}}, got {m.group(0)}"
    for sname, svc in compose["services"].items():
        env = svc.get("environment", {}) or {}
        assert isinstance(env, dict), f"service {sname}: use a mapping for environment"
        for key, value in env.items():
            if SECRET_NAME.search(key) and not key.endswith("_USER"):
                assert VARIABLE.search(str(value)), f"{sname}: {key} holds a literal value"
            if "://" in str(value) and "@" in str(value):
                assert ":?" in str(value), f"{sname}: {key} has credentials not from a variable"


def test_production_settings_parse(compose: dict[str, Any]) -> None:
    """The SECML_* environment the services get is accepted by Settings (secrets filled in)."""
    env = compose["services"]["gateway"]["environment"]
    values = {
        k.removeprefix("SECML_").lower(): VARIABLE.sub(_interpolate, str(v))
        for k, v in env.items()
        if k.startswith("SECML_")
    }
    settings = Settings(**values)
    assert settings.environment == "production"
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"
    assert settings.store_url.startswith("postgresql+psycopg://")
    assert settings.kafka_bootstrap_servers == "kafka:9092"


def test_every_variable_is_in_env_example() -> None:
    """Every variable the compose file interpolates is listed in .env.example."""
    used = {m.group(1) for m in VARIABLE.finditer(COMPOSE.read_text(encoding="utf-8"))}
    assert used, "no variables found: the regex is broken"
    missing = sorted(used - _env_example_names())
    assert missing == [], f"add to .env.example: {missing}"


def test_every_setting_is_in_env_example() -> None:
    """Every field of secml.settings.Settings appears in .env.example as SECML_<FIELD>."""
    names = _env_example_names()
    missing = sorted(
        f"SECML_{f.upper()}" for f in Settings.model_fields if f"SECML_{f.upper()}" not in names
    )
    assert missing == [], f"add to .env.example: {missing}"
    unknown = sorted(
        n
        for n in names
        if n.startswith("SECML_") and n.removeprefix("SECML_").lower() not in Settings.model_fields
    )
    assert unknown == [], f".env.example lists settings that do not exist: {unknown}"


def test_env_example_values_parse() -> None:
    """The active SECML_* lines of .env.example are valid values for Settings, each set once."""
    values = {}
    for n, line in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        m = re.match(r"^SECML_([A-Z0-9_]+)=(.*)$", line)
        if m:
            assert m.group(1).lower() not in values, (
                f".env.example line {n}: SECML_{m.group(1)} again"
            )
            values[m.group(1).lower()] = m.group(2)
    settings = Settings(**values)
    assert settings.environment == "local"
    # The values shown are the defaults, so the file documents what an unset variable means.
    for name, text in values.items():
        default = Settings.model_fields[name].default
        if hasattr(default, "get_secret_value"):
            default = default.get_secret_value()
        assert text == str(default), f"SECML_{name.upper()}={text} but the default is {default}"


def test_mounted_and_built_paths_exist(services: dict[str, dict[str, Any]]) -> None:
    """Bind mounts, build contexts and Dockerfiles name paths that exist in the repository."""
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"service {name} mounts missing path {source}"
        build = svc.get("build")
        if build:
            context = ROOT / build.get("context", ".")
            assert context.is_dir(), f"service {name}: build context {context} missing"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name


def test_commands_run_code_that_exists(services: dict[str, dict[str, Any]]) -> None:
    """``python -m mod``, ``uvicorn mod:app`` and ``streamlit run file`` point at real code."""
    for name, svc in services.items():
        cmd = svc.get("command") or []
        text = " ".join(cmd) if isinstance(cmd, list) else cmd
        for mod in re.findall(r"python -m ([\w.]+)", text):
            path = ROOT / Path(*mod.split("."))
            assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), (
                name,
                mod,
            )
        for mod in re.findall(r"uvicorn ([\w.]+):\w+", text):
            assert (ROOT / Path(*mod.split("."))).with_suffix(".py").is_file(), (name, mod)
        for script in re.findall(r"streamlit run (\S+)", text):
            assert (ROOT / script).is_file(), (name, script)


def test_mlflow_allows_its_compose_host(services: dict[str, dict[str, Any]]) -> None:
    """MLflow 3 rejects unknown Host headers: the compose names must be allowed."""
    cmd = " ".join(services["mlflow"]["command"])
    allowed = re.search(r"--allowed-hosts[= ](\S+)", cmd)
    assert allowed, "mlflow server needs --allowed-hosts"
    hosts = allowed.group(1).split(",")
    assert {"mlflow", "mlflow:5000"} <= set(hosts)
    assert "--expose-prometheus" in cmd


def test_prometheus_targets_name_compose_services(services: dict[str, dict[str, Any]]) -> None:
    """Each compose target file exists for each scrape job and names a service (or alias)."""
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text(encoding="utf-8"))
    names = set(services)
    for svc in services.values():
        nets = svc.get("networks")
        if isinstance(nets, dict):
            for net in nets.values():
                names.update((net or {}).get("aliases", []))
    for job in config["scrape_configs"]:
        for sd in job["file_sd_configs"]:
            for f in sd["files"]:
                path = ROOT / "monitoring" / "targets-compose" / Path(f).name
                assert path.is_file(), f"job {job['job_name']}: missing {path}"
                for group in json.loads(path.read_text(encoding="utf-8")):
                    for target in group["targets"]:
                        host = target.split(":")[0]
                        assert host in names, f"{path.name}: {target} is not a compose service"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfiles(dockerfile: Path) -> None:
    """Pinned base images, the one lock file, and COPY sources that exist."""
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert froms, f"{dockerfile}: no FROM"
    for image in froms:
        assert ":" in image and not image.endswith(":latest"), f"{dockerfile}: unpinned {image}"
    assert "requirements.lock" in text and "pyproject.toml" in text
    assert re.search(r"pip install .*-r requirements\.lock", text) or "triton" in text
    for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, flags=re.M):
        sources = line.split()[:-1]
        for src in sources:
            assert (ROOT / src).exists(), f"{dockerfile}: COPY source {src} does not exist"
    assert re.search(r"^USER\s+\w+", text, flags=re.M) or "tritonserver" in text
