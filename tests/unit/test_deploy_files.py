"""Static checks of the deployment files: docker-compose.yml, ops/Dockerfile and ops/k8s/.

No Docker engine or cluster runs here, so every promise these files make is read from the
files themselves: the Compose file against the Compose Specification's JSON Schema, the
Dockerfile with hadolint and its own rules, the Kubernetes manifests for required fields and
for names that must agree. Where a file restates something the code decides (the worker
command, the job deadline, the queue names, the settings), the test reads it from the code.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from fakehalo import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from tests.harness.demo import demo_jobs
from tests.harness.processes import FLOWER_TASKS_COLUMNS
from worker.connections import load_connections
from worker.models import parse_job
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
# The Compose Specification's JSON Schema, kept in the repository (tests/fixtures/README.md).
COMPOSE_SCHEMA = ROOT / "tests" / "fixtures" / "compose" / "compose-spec.json"
DOCKERFILE = ROOT / "ops" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "ops" / "k8s"
EXAMPLE_SECRET = K8S / "secret.example.yaml"
RUNBOOK = ROOT / "ops" / "RUNBOOK.md"
BIN = Path(sys.executable).parent

DEMO_SERVICES = {"halo-fake", "demo-jobs"}
WORKER_COMMAND = ["celery", "-A", "worker.app", "worker"]
FLOWER_COMMAND = ["celery", "-A", "worker.app", "flower"]

# The longest a job holds its message: its deadline plus one Halo request that started just
# before it. Orchestrators must wait that long after SIGTERM (Celery's warm shutdown finishes
# running jobs), plus the 60 s allowance for the shutdown itself, before they SIGKILL.
_DEFAULTS = Settings.model_fields
LONGEST_JOB_S = float(_DEFAULTS["job_deadline_s"].default) + float(
    _DEFAULTS["http_read_timeout_s"].default
)
SHUTDOWN_ALLOWANCE_S = 60.0
GRACE_FLOOR_S = LONGEST_JOB_S + SHUTDOWN_ALLOWANCE_S

# `${VAR}` or `${VAR:?message}`: a value Compose must be given; `${VAR:-default}` is not allowed
# for a secret, since the default would be a literal.
_REQUIRED_VARIABLE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*)?\}$")
_SECRET_KEY = re.compile(r"pass(word)?|secret|token|auth|dsn|api[_-]?key|private", re.IGNORECASE)
_SECRET_FLAG = re.compile(r"^--?(a|requirepass|pass(word)?|auth|token|secret)$")
_URL_PASSWORD = re.compile(r"://[^/@\s:]*:(?P<password>[^@\s]+)@")


def _skip_or_fail(reason: str) -> None:
    """Skip locally; in CI a missing prerequisite is a failure, never a silent skip."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this cannot be skipped)")
    pytest.skip(reason)


# --- Compose -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def _argv(command: Any) -> list[str]:
    assert isinstance(command, list), f"use the exec (list) form, got {command!r}"
    return [str(word) for word in command]


def _duration_s(text: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    assert parts, f"not a Compose duration: {text!r}"
    assert "".join(n + u for n, u in parts) == text, f"not a Compose duration: {text!r}"
    unit_s = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(number) * unit_s[unit] for number, unit in parts)


def _env_files(service: dict[str, Any]) -> list[tuple[str, bool]]:
    """(path, required) for each env_file entry of a service."""
    entries = service.get("env_file", [])
    entries = [entries] if isinstance(entries, str) else entries
    return [
        (entry, True) if isinstance(entry, str) else (entry["path"], entry.get("required", True))
        for entry in entries
    ]


def _option_value(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(compose), key=lambda e: str(list(e.path))
    )
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_redis_keeps_an_append_only_file_fsynced_every_second_and_never_evicts(
    services: dict[str, dict[str, Any]],
) -> None:
    argv = _argv(services["redis"]["command"])
    assert argv[0] == "redis-server"
    assert _option_value(argv, "--appendonly") == "yes"
    assert _option_value(argv, "--appendfsync") == "everysec"
    assert _option_value(argv, "--maxmemory-policy") == "noeviction"


def test_redis_requires_a_password_that_compose_must_be_given(
    services: dict[str, dict[str, Any]],
) -> None:
    password = _option_value(_argv(services["redis"]["command"]), "--requirepass")
    assert _REQUIRED_VARIABLE.match(password), password


def test_redis_data_lives_in_a_named_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    mounts = [str(m).split(":") for m in services["redis"]["volumes"]]
    assert ["redis-data", "/data"] in [m[:2] for m in mounts]
    assert "redis-data" in compose["volumes"]


@pytest.mark.parametrize("name", ["redis", "worker", "flower", "halo-fake"])
def test_long_running_services_have_health_checks(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    check = services[name].get("healthcheck")
    assert check, f"{name} has no healthcheck"
    assert not check.get("disable"), f"{name} disables its healthcheck"
    assert check["test"][0] in {"CMD", "CMD-SHELL"}


def test_worker_scales_because_it_has_no_container_name_or_host_port(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "build" in worker


def test_worker_stop_grace_period_outlasts_the_longest_job_and_the_shutdown(
    services: dict[str, dict[str, Any]],
) -> None:
    grace_s = _duration_s(services["worker"]["stop_grace_period"])
    assert grace_s > SHUTDOWN_ALLOWANCE_S
    assert grace_s >= GRACE_FLOOR_S, f"{grace_s} s < {LONGEST_JOB_S} s job + 60 s shutdown"


def test_flower_is_bound_to_loopback_and_requires_basic_auth_from_the_environment(
    services: dict[str, dict[str, Any]],
) -> None:
    flower = services["flower"]
    assert _argv(flower["command"]) == FLOWER_COMMAND
    for port in flower["ports"]:
        host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
        assert host_ip == "127.0.0.1", port
    assert _REQUIRED_VARIABLE.match(flower["environment"]["FLOWER_BASIC_AUTH"])
    # Flower reads every FLOWER_* variable as an option: no env_file may smuggle one in.
    assert "env_file" not in flower


def test_demo_services_run_only_under_the_demo_profile(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if name in DEMO_SERVICES:
            assert service.get("profiles") == ["demo"], name
        else:
            assert "profiles" not in service, f"{name} must run without a profile"


def test_no_service_outside_the_demo_profile_depends_on_a_demo_service(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if name not in DEMO_SERVICES:
            assert not DEMO_SERVICES & set(service.get("depends_on", {})), name


def _secret_literals(node: Any, where: str = "") -> Iterator[str]:
    """Places in a loaded Compose document where a secret is written as a literal."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _entry_literals(str(key), value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            here = f"{where}[{index}]"
            previous = str(node[index - 1]) if index else ""
            if isinstance(item, str) and "=" in item:
                key, _, value = item.partition("=")
                yield from _entry_literals(key, value, here)
            elif isinstance(item, str) and _SECRET_FLAG.match(previous):
                yield from _unless_required(item, f"{here} after {previous}")
            else:
                yield from _secret_literals(item, here)
    elif isinstance(node, str):
        for match in _URL_PASSWORD.finditer(node):
            yield from _unless_required(match["password"], f"{where}: URL password")


def _entry_literals(key: str, value: Any, where: str) -> Iterator[str]:
    if isinstance(value, str) and _SECRET_KEY.search(key):
        yield from _unless_required(value, where)
    else:
        yield from _secret_literals(value, where)


def _unless_required(value: str, where: str) -> Iterator[str]:
    if not _REQUIRED_VARIABLE.match(value):
        yield f"{where} = {value!r}"


def test_the_secret_scanner_finds_literals_in_every_form_it_checks() -> None:
    planted = {
        "environment": {"REDIS_PASSWORD": "hunter2", "FLOWER_BASIC_AUTH": "${FLOWER_AUTH:-a:b}"},
        "list": ["HALO_ACME_SECRET=s3cret", "redis-server", "--requirepass", "hunter2"],
        "url": "redis://:hunter2@redis:6379/0",
    }
    assert len(list(_secret_literals(planted))) == 5
    clean = {"environment": {"REDIS_PASSWORD": "${REDIS_PASSWORD:?set it}"}}
    assert not list(_secret_literals(clean))


def test_no_secret_is_written_literally_in_the_compose_file(compose: dict[str, Any]) -> None:
    assert not list(_secret_literals(compose))


def test_every_broker_url_takes_the_redis_password_from_the_environment(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ["worker", "flower", "demo-jobs"]:
        url = services[name]["environment"]["HALO_BROKER_URL"]
        match = re.fullmatch(r"redis://:(?P<password>\$\{[^}]+\})@redis:6379/0", url)
        assert match, f"{name}: {url}"
        assert match["password"].startswith("${REDIS_PASSWORD")


def _native_commands() -> list[list[str | None]]:
    """Every list literal in tests/harness/processes.py, as words: `str(BIN / "x")` is "x", else
    None."""
    tree = ast.parse((ROOT / "tests" / "harness" / "processes.py").read_text(encoding="utf-8"))

    def word(node: ast.expr) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "str"
            and len(node.args) == 1
        ):
            return word(node.args[0])
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return word(node.right)
        return None

    lists = [
        [word(item) for item in node.elts] for node in ast.walk(tree) if isinstance(node, ast.List)
    ]
    return [words for words in lists if words and words[0] is not None]


def _command_core(words: list[str | None]) -> list[str]:
    """The program and sub-command: the leading fixed words, less an option whose value varies."""
    core: list[str] = []
    for word in words:
        if word is None:
            break
        core.append(word)
    if len(core) < len(words) and core[-1].startswith("-"):
        core.pop()
    return core


@pytest.mark.parametrize(
    ("service", "program"),
    [("worker", "celery"), ("halo-fake", "python"), ("redis", "redis-server")],
)
def test_compose_runs_the_same_commands_as_the_native_process_harness(
    services: dict[str, dict[str, Any]], service: str, program: str
) -> None:
    argv = _argv(services[service]["command"])
    cores = [_command_core(words) for words in _native_commands() if words[0] == program]
    assert cores, f"tests/harness/processes.py no longer starts {program}"
    assert any(argv[: len(core)] == core for core in cores), f"{argv} vs {cores}"


def test_compose_redis_keeps_the_durability_flags_the_native_redis_is_tested_with(
    services: dict[str, dict[str, Any]],
) -> None:
    argv = _argv(services["redis"]["command"])
    (native,) = [words for words in _native_commands() if words[0] == "redis-server"]
    for flag in ["--appendfsync", "--maxmemory-policy"]:
        assert _option_value(argv, flag) == native[native.index(flag) + 1]


def test_worker_and_flower_run_the_commands_of_the_contract(
    services: dict[str, dict[str, Any]],
) -> None:
    assert _argv(services["worker"]["command"]) == WORKER_COMMAND
    assert _argv(services["flower"]["command"]) == FLOWER_COMMAND


def _help_prefix(argv: list[str]) -> list[str]:
    if argv[0] == "celery":
        return argv[:4]
    if argv[0] == "halo-jobs":
        return argv[:2]
    if argv[:2] == ["python", "-m"]:
        return argv[:3]
    return argv[:1]


# The worker and Flower pass no options beyond the contract's command (checked above).
@pytest.mark.parametrize("service", ["halo-fake", "demo-jobs"])
def test_every_option_compose_passes_is_one_its_command_accepts(
    services: dict[str, dict[str, Any]], service: str
) -> None:
    argv = _argv(services[service]["command"])
    prefix = _help_prefix(argv)
    program = BIN / prefix[0]
    if not program.is_file():
        _skip_or_fail(f"{program} is not installed (pip install -e '.[dev]')")
    done = subprocess.run(
        [str(program), *prefix[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    for option in (word for word in argv[len(prefix) :] if word.startswith("--")):
        assert option in done.stdout, f"{' '.join(prefix)} does not accept {option}"


def test_env_files_that_compose_requires_exist_and_optional_ones_are_git_ignored(
    services: dict[str, dict[str, Any]],
) -> None:
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    for name, service in services.items():
        for path, required in _env_files(service):
            if required:
                assert (ROOT / path).is_file(), f"{name}: env file {path} is missing"
            else:
                assert path in ignored or f"/{path}" in ignored, f"{path} must be git-ignored"


def _settings_variables() -> set[str]:
    names = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            names.add(str(choices[0]))
        else:
            names.add(f"HALO_{field_name.upper()}")
    return names


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, str):
        yield node


def test_env_example_documents_every_variable_compose_and_the_workers_read(
    compose: dict[str, Any],
) -> None:
    documented = (ROOT / "ops" / "env.example").read_text(encoding="utf-8")
    interpolated = {
        name
        for text in _strings(compose)
        for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)
    }
    missing = sorted(
        name
        for name in interpolated | _settings_variables()
        if not re.search(rf"\b{name}\b", documented)
    )
    assert not missing, f"add {missing} to ops/env.example"


def _env_assignments(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


def test_demo_env_holds_only_the_fake_halos_public_demo_credential() -> None:
    assert _env_assignments(ROOT / "ops" / "demo" / "demo.env") == {
        "HALO_DEMO_SECRET": DEMO_CLIENT_SECRET
    }


def test_demo_connections_file_loads_and_points_at_the_fake_halo_service(
    services: dict[str, dict[str, Any]],
) -> None:
    demo_env = _env_assignments(ROOT / "ops" / "demo" / "demo.env")
    connections = load_connections(ROOT / "ops" / "demo" / "connections.toml", demo_env)
    demo = connections["demo"]
    port = _option_value(_argv(services["halo-fake"]["command"]), "--port")
    assert demo.url == f"http://halo-fake:{port}"
    assert demo.client_id == DEMO_CLIENT_ID
    fake_argv = _argv(services["halo-fake"]["command"])
    assert _option_value(fake_argv, "--client-id") == DEMO_CLIENT_ID
    assert _option_value(fake_argv, "--client-secret-env") in demo_env


def test_env_example_points_workers_at_the_demo_connections_file_to_start_with() -> None:
    assignments = _env_assignments(ROOT / "ops" / "env.example")
    assert (ROOT / assignments["HOST_CONNECTIONS_FILE"]).is_file()


def test_connections_file_is_mounted_read_only_into_workers(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = services["worker"]
    target = worker["environment"]["HALO_CONNECTIONS_FILE"]
    (mount,) = [m for m in worker["volumes"] if isinstance(m, dict) and m["target"] == target]
    assert mount["type"] == "bind"
    assert mount["read_only"] is True
    assert _REQUIRED_VARIABLE.match(mount["source"])


def test_demo_jobs_file_holds_the_demos_four_jobs_with_fixed_ids(
    services: dict[str, dict[str, Any]],
) -> None:
    argv = _argv(services["demo-jobs"]["command"])
    assert argv[:3] == ["halo-jobs", "submit", "--jsonl"]
    in_image = argv[3]
    assert in_image.startswith("/app/")
    local = ROOT / in_image.removeprefix("/app/")
    lines = local.read_text(encoding="utf-8").splitlines()
    jobs = [json.loads(line) for line in lines]
    assert jobs == demo_jobs("compose")
    assert all(parse_job(line).job_id for line in lines)
    copies = [i.args for i in _production_image(_dockerfile()) if i.keyword == "COPY"]
    assert f"{local.relative_to(ROOT)} {in_image}" in copies


# --- Dockerfile ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def _dockerfile() -> list[Instruction]:
    """The instructions, with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
        pending = ""
    return instructions


def _stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _stage_name(stage: list[Instruction]) -> str:
    _, _, alias = stage[0].args.partition(" AS ")
    return alias.strip().lower()


def _image(instructions: list[Instruction], target: str) -> list[Instruction]:
    """What the image built with `--target target` holds: the instructions of that stage,
    preceded by those of the stages it builds on (`FROM <stage>`), root first."""
    stages = {_stage_name(stage): stage for stage in _stages(instructions)}
    chain: list[Instruction] = []
    stage = stages[target]
    while True:
        chain = stage + chain
        base = stage[0].args.partition(" AS ")[0].strip().lower()
        if base not in stages:
            return chain
        stage = stages[base]


def _production_target(instructions: list[Instruction]) -> str:
    """The last stage: what `docker build` makes without --target."""
    return _stage_name(_stages(instructions)[-1])


def _production_image(instructions: list[Instruction]) -> list[Instruction]:
    return _image(instructions, _production_target(instructions))


def test_dockerfile_builds_in_stages_from_pinned_bases_and_ends_on_slim_python() -> None:
    stages = _stages(_dockerfile())
    assert len(stages) >= 2
    names: set[str] = set()
    for stage in stages:
        image, *alias = (
            stage[0].args.split(" AS ", 1) if " AS " in stage[0].args else [stage[0].args]
        )
        names.update(a.strip().lower() for a in alias)
        if image.lower() in names:
            continue
        _, _, tag = image.partition(":")
        assert tag, f"unpinned base image {image}"
        assert tag != "latest", f"unpinned base image {image}"
    final_image = _production_image(_dockerfile())[0].args.split()[0]
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", final_image)


def test_dockerfile_final_stage_runs_as_a_non_root_user() -> None:
    users = [i.args for i in _production_image(_dockerfile()) if i.keyword == "USER"]
    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_final_stage_declares_a_health_check() -> None:
    checks = [i.args for i in _production_image(_dockerfile()) if i.keyword == "HEALTHCHECK"]
    assert checks
    assert checks[-1] != "NONE"


def test_every_pip_install_in_the_dockerfile_skips_the_cache() -> None:
    runs = [i.args for i in _dockerfile() if i.keyword == "RUN" and "pip install" in i.args]
    assert runs
    for run in runs:
        for command in re.split(r"&&|;", run):
            if "pip install" in command:
                assert "--no-cache-dir" in command, command


def test_dockerfile_final_stage_installs_no_packages_or_build_tools() -> None:
    runs = " ".join(i.args for i in _production_image(_dockerfile()) if i.keyword == "RUN")
    assert not re.search(r"apt-get|apt |apk |pip install|\bgcc\b|build-essential|\bmake\b", runs)


def test_dockerfile_runs_the_worker_by_default() -> None:
    (cmd,) = [i.args for i in _production_image(_dockerfile()) if i.keyword == "CMD"]
    assert json.loads(cmd) == WORKER_COMMAND


def _mentions_the_fake(instruction: Instruction) -> bool:
    return "fakehalo" in instruction.args or "halo/fake" in instruction.args


def test_the_production_image_and_the_wheel_it_installs_hold_no_fake_halo() -> None:
    instructions = _dockerfile()
    production = _production_image(instructions)
    built_from = {
        i.args.split()[0].removeprefix("--from=").lower()
        for i in production
        if i.keyword == "COPY" and i.args.startswith("--from=")
    }
    assert built_from == {"builder"}
    builder = _image(instructions, "builder")
    assert not [i.args for i in production + builder if _mentions_the_fake(i)]
    assert "demo" not in {_stage_name(stage) for stage in _stages(production)}


def test_the_demo_target_is_the_production_image_plus_the_fake_halos_source() -> None:
    instructions = _dockerfile()
    demo_stage = {_stage_name(stage): stage for stage in _stages(instructions)}["demo"]
    added = [i for i in demo_stage if i.keyword != "FROM"]

    def body(image: list[Instruction]) -> list[Instruction]:
        return [i for i in image if i.keyword != "FROM"]

    assert body(_image(instructions, "demo")) == body(_production_image(instructions)) + added
    copies = [i.args.split() for i in added if i.keyword == "COPY"]
    assert copies == [["fakehalo", "/app/fakehalo"]]
    assert [i.args for i in added if i.keyword == "ENV"] == ["PYTHONPATH=/app"]
    assert {i.keyword for i in added} == {"COPY", "ENV"}, "the demo stage only adds the fake"


def test_only_the_fake_halo_service_builds_the_demo_target_and_tags_it_apart(
    services: dict[str, dict[str, Any]],
) -> None:
    production = _production_target(_dockerfile())
    images: dict[str, set[str]] = {"demo": set(), production: set()}
    for name, service in services.items():
        if "build" not in service:
            continue
        runs_the_fake = _argv(service["command"])[:3] == ["python", "-m", "fakehalo"]
        target = service["build"].get("target")
        assert target == ("demo" if runs_the_fake else production), name
        images[target].add(service["image"])
        if runs_the_fake:
            assert name in DEMO_SERVICES, name
    assert images["demo"], "no service runs the fake Halo from the demo target"
    # One tag for both would let the demo image stand in for the production one.
    assert not images["demo"] & images[production]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = BIN / "hadolint"
    try:
        done = subprocess.run(
            [str(hadolint), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError as exc:
        _skip_or_fail(f"hadolint cannot run ({hadolint}: {exc}); install the dev extra")
        return
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerignore_admits_only_what_the_dockerfile_copies() -> None:
    entries = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert entries[0] == "*", "start from nothing, then admit files one by one"
    admitted = [entry[1:].rstrip("/") for entry in entries if entry.startswith("!")]
    assert not [a for a in admitted if re.search(r"\.env|secret|connections|\.git\b", a)]
    for instruction in _dockerfile():
        if instruction.keyword != "COPY" or instruction.args.startswith("--from"):
            continue
        *sources, _ = instruction.args.split()
        for source in sources:
            path = source.removeprefix("./").rstrip("/")
            assert any(path == a or path.startswith(f"{a}/") for a in admitted), source


def _requirement(line: str) -> tuple[str, str]:
    name, version = line.split("==")
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower(), version.strip()


LOCK_FILES = (ROOT / "ops" / "requirements.txt", ROOT / "ops" / "requirements-build.txt")


def _locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """A hashed lock file (pip-compile --generate-hashes): name -> (version, hashes)."""
    entries: dict[str, tuple[str, list[str]]] = {}
    logical = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        if logical.strip():
            pin, *options = logical.split()
            assert re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+-]+", pin), pin
            name, version = _requirement(pin)
            hashes = [o.removeprefix("--hash=") for o in options if o.startswith("--hash=")]
            assert len(hashes) == len(options), f"{path.name}: {pin} has other options"
            entries[name] = (version, hashes)
        logical = ""
    return entries


def test_image_requirements_pin_every_package_and_agree_with_pyproject() -> None:
    locked = _locked(ROOT / "ops" / "requirements.txt")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for dependency in project["project"]["dependencies"]:
        name, version = _requirement(dependency)
        assert locked.get(name, ("missing", []))[0] == version, (
            f"{dependency}: ops/requirements.txt has {locked.get(name)}"
        )


@pytest.mark.parametrize("lock", LOCK_FILES, ids=lambda path: path.name)
def test_every_locked_package_carries_sha256_hashes(lock: Path) -> None:
    locked = _locked(lock)
    assert locked, f"{lock.name} locks nothing"
    for name, (_, hashes) in locked.items():
        assert hashes, f"{lock.name}: {name} has no --hash, so pip --require-hashes refuses it"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), (name, hashes)


def test_the_build_backend_is_locked_for_what_pyproject_builds_with() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    locked = _locked(ROOT / "ops" / "requirements-build.txt")
    for requirement in project["build-system"]["requires"]:
        name, _, floor = requirement.partition(">=")
        version, _ = locked[name.strip().lower()]
        assert int(version.split(".")[0]) >= int(floor.split(".")[0]), (requirement, version)


def test_every_base_image_is_pinned_by_digest() -> None:
    aliases: set[str] = set()
    for stage in _stages(_dockerfile()):
        image, _, alias = stage[0].args.partition(" AS ")
        if image.strip().lower() not in aliases:
            assert re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", image.strip()), (
                f"FROM {image} is not pinned by digest"
            )
        aliases.add(alias.strip().lower())
    digests = {
        i.args.split("@")[1].split()[0]
        for i in _dockerfile()
        if i.keyword == "FROM" and i.args.split()[0].lower() not in aliases
    }
    assert len(digests) == 1, f"the stages build on different bases: {digests}"


def test_dockerfile_installs_only_hashed_locks_and_the_projects_own_wheel() -> None:
    installs = [
        command.strip()
        for i in _dockerfile()
        if i.keyword == "RUN"
        for command in re.split(r"&&|;", i.args)
        if re.search(r"pip (install|wheel)", command)
    ]
    locks = {f"ops/{path.name}" for path in LOCK_FILES}
    installed_locks = set()
    for command in installs:
        argv = command.split()
        assert "--no-deps" in argv, command
        if "wheel" in argv:
            # The project is built with the locked backend, never one fetched for the build.
            assert "--no-build-isolation" in argv, command
        elif "--requirement" in argv:
            assert "--require-hashes" in argv, command
            installed_locks.add(_option_value(argv, "--requirement"))
        else:
            # Only the wheel the builder just made from this repository's source.
            assert re.fullmatch(r"/opt/dist/halo_update_worker-\*\.whl", argv[-1]), command
    assert installed_locks == locks


# --- Kubernetes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    file: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind"))

    @property
    def name(self) -> str:
        return str(self.body.get("metadata", {}).get("name"))


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for body in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if body is not None:
                assert isinstance(body, dict), path.name
                found.append(Manifest(path.name, body))
    assert found
    return found


def _one(manifests: list[Manifest], kind: str, name: str) -> dict[str, Any]:
    matches = [m.body for m in manifests if m.kind == kind and m.name == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def _deployments(manifests: list[Manifest]) -> list[dict[str, Any]]:
    return [m.body for m in manifests if m.kind == "Deployment"]


def _subset(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_every_kubernetes_manifest_has_the_required_fields(manifests: list[Manifest]) -> None:
    for manifest in manifests:
        where = f"{manifest.file}: {manifest.kind} {manifest.name}"
        assert manifest.body.get("apiVersion"), where
        assert manifest.body.get("kind"), where
        if manifest.kind == "Kustomization":
            assert manifest.body.get("resources"), where
            continue
        assert manifest.body.get("metadata", {}).get("name"), where
        if manifest.kind in {"ConfigMap", "Secret"}:
            assert manifest.body.get("data") or manifest.body.get("stringData"), where
        else:
            assert isinstance(manifest.body.get("spec"), dict), where


def test_kustomization_applies_every_manifest_except_the_example_secret(
    manifests: list[Manifest],
) -> None:
    (kustomization,) = [m.body for m in manifests if m.kind == "Kustomization"]
    listed = set(kustomization["resources"])
    on_disk = {m.file for m in manifests} - {"kustomization.yaml"}
    assert listed == on_disk - {EXAMPLE_SECRET.name}


def test_deployment_selectors_match_their_own_pods_and_no_others(
    manifests: list[Manifest],
) -> None:
    deployments = _deployments(manifests)
    assert {d["metadata"]["name"] for d in deployments} == {"halo-worker", "halo-flower"}
    for deployment in deployments:
        selector = deployment["spec"]["selector"]["matchLabels"]
        for other in deployments:
            labels = other["spec"]["template"]["metadata"]["labels"]
            assert _subset(selector, labels) == (other is deployment)


def test_disruption_budget_selects_the_worker_pods(manifests: list[Manifest]) -> None:
    worker = _one(manifests, "Deployment", "halo-worker")
    budgets = [m.body for m in manifests if m.kind == "PodDisruptionBudget"]
    assert budgets
    for budget in budgets:
        labels = worker["spec"]["template"]["metadata"]["labels"]
        assert (
            budget["spec"]["selector"]["matchLabels"] == worker["spec"]["selector"]["matchLabels"]
        )
        assert _subset(budget["spec"]["selector"]["matchLabels"], labels)


def test_scaled_object_targets_the_worker_deployment_and_authenticates(
    manifests: list[Manifest],
) -> None:
    (scaled,) = [m.body for m in manifests if m.kind == "ScaledObject"]
    target = scaled["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    _one(manifests, "Deployment", target["name"])
    assert scaled["spec"]["minReplicaCount"] >= 1, "only running workers restore stranded jobs"
    for trigger in scaled["spec"]["triggers"]:
        _one(manifests, "TriggerAuthentication", trigger["authenticationRef"]["name"])


def test_keda_scales_on_the_halo_queue_list_and_only_on_queues_the_app_declares(
    manifests: list[Manifest],
) -> None:
    from worker.app import app  # noqa: PLC0415 - the Celery app is only needed here.

    declared = {queue.name for queue in app.conf.task_queues}
    (scaled,) = [m.body for m in manifests if m.kind == "ScaledObject"]
    (kustomization,) = [m.body for m in manifests if m.kind == "Kustomization"]
    triggers = scaled["spec"]["triggers"]
    lists = [t["metadata"]["listName"] for t in triggers]
    assert "halo" in lists
    assert set(lists) <= declared
    for trigger in triggers:
        assert trigger["type"] == "redis"
        assert int(trigger["metadata"]["listLength"]) > 0
        host = trigger["metadata"]["address"].split(":")[0]
        assert host.endswith(f".{kustomization['namespace']}.svc.cluster.local"), host


def test_flower_shows_each_jobs_arguments_and_outcome_in_compose_kubernetes_and_the_tests(
    services: dict[str, dict[str, Any]], manifests: list[Manifest]
) -> None:
    # Flower's own default columns hide the result and exception that tell a job's outcome.
    shown = FLOWER_TASKS_COLUMNS.split(",")
    assert {"state", "args", "kwargs", "result", "exception"} <= set(shown)
    assert services["flower"]["environment"]["FLOWER_TASKS_COLUMNS"] == FLOWER_TASKS_COLUMNS
    flower = _one(manifests, "Deployment", "halo-flower")
    (container,) = flower["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FLOWER_TASKS_COLUMNS"] == FLOWER_TASKS_COLUMNS


def test_flower_service_selects_flower_pods_on_a_named_container_port(
    manifests: list[Manifest],
) -> None:
    flower = _one(manifests, "Deployment", "halo-flower")
    service = _one(manifests, "Service", "halo-flower")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert _subset(service["spec"]["selector"], flower["spec"]["template"]["metadata"]["labels"])
    (container,) = flower["spec"]["template"]["spec"]["containers"]
    port_names = {port["name"] for port in container["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
    assert container["command"] == FLOWER_COMMAND


def test_worker_termination_grace_outlasts_the_longest_job_and_the_shutdown(
    manifests: list[Manifest],
) -> None:
    pod = _one(manifests, "Deployment", "halo-worker")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= GRACE_FLOOR_S


def test_worker_pods_have_resources_a_liveness_probe_and_run_as_the_image_user(
    manifests: list[Manifest],
) -> None:
    pod = _one(manifests, "Deployment", "halo-worker")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == WORKER_COMMAND
    for bound in ["requests", "limits"]:
        assert {"cpu", "memory"} <= set(container["resources"][bound])
    assert container["livenessProbe"]["exec"]["command"]
    image_user = [i.args for i in _production_image(_dockerfile()) if i.keyword == "USER"][-1]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == image_user.split(":")[0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_worker_liveness_is_one_command_in_the_image_compose_and_kubernetes(
    manifests: list[Manifest], services: dict[str, dict[str, Any]]
) -> None:
    (check,) = [i.args for i in _production_image(_dockerfile()) if i.keyword == "HEALTHCHECK"]
    in_image = json.loads(check.split(" CMD ", 1)[1])
    in_compose = services["worker"]["healthcheck"]["test"]
    pod = _one(manifests, "Deployment", "halo-worker")["spec"]["template"]["spec"]
    in_kubernetes = pod["containers"][0]["livenessProbe"]["exec"]["command"]
    assert in_compose == ["CMD", *in_image]
    assert in_kubernetes == in_image


def test_worker_metrics_port_is_the_same_in_settings_port_and_scrape_annotation(
    manifests: list[Manifest],
) -> None:
    port = _one(manifests, "ConfigMap", "halo-worker-config")["data"]["HALO_METRICS_PORT"]
    template = _one(manifests, "Deployment", "halo-worker")["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert {"name": "metrics", "containerPort": int(port)} in container["ports"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == port


def test_pods_get_no_service_link_variables(manifests: list[Manifest]) -> None:
    for deployment in _deployments(manifests):
        assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False


def _secret_keys(manifests: list[Manifest]) -> dict[str, set[str]]:
    return {
        m.name: set(m.body.get("stringData", {})) | set(m.body.get("data", {}))
        for m in manifests
        if m.kind == "Secret"
    }


def test_every_config_map_and_secret_a_pod_reads_is_defined(manifests: list[Manifest]) -> None:
    config_maps = {m.name for m in manifests if m.kind == "ConfigMap"}
    secrets = _secret_keys(manifests)
    for deployment in _deployments(manifests):
        pod = deployment["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], set()), variable["name"]
    for auth in (m.body for m in manifests if m.kind == "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in secrets.get(ref["name"], set())


def test_example_connections_load_with_secrets_named_in_the_example_secret(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    connections_file = tmp_path / "connections.toml"
    connections_file.write_text(
        _one(manifests, "ConfigMap", "halo-connections")["data"]["connections.toml"]
    )
    keys = _secret_keys(manifests)["halo-worker-secrets"]
    assert load_connections(connections_file, dict.fromkeys(keys, "placeholder"))


def test_example_secrets_hold_placeholders_only(manifests: list[Manifest]) -> None:
    secrets = [m for m in manifests if m.kind == "Secret"]
    assert secrets
    for secret in secrets:
        assert secret.file == EXAMPLE_SECRET.name, "real Secrets never live in the repository"
        assert "data" not in secret.body
        for key, value in secret.body["stringData"].items():
            assert "REPLACE_ME" in value, f"{secret.name}.{key} looks like a real value"


# --- Runbook -------------------------------------------------------------------------------


def test_runbook_covers_every_operator_task() -> None:
    headings = {
        line.lstrip("#").strip().lower()
        for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    }
    assert {
        "deploy",
        "scale",
        "drain a worker",
        "rotate a halo secret",
        "read flower",
        "replay failed jobs",
        "what each alert means",
        "recover from a redis loss",
    } <= headings


def test_runbook_states_the_grace_period_that_compose_and_kubernetes_use(
    services: dict[str, dict[str, Any]], manifests: list[Manifest]
) -> None:
    in_compose = _duration_s(services["worker"]["stop_grace_period"])
    pod = _one(manifests, "Deployment", "halo-worker")["spec"]["template"]["spec"]
    assert in_compose == pod["terminationGracePeriodSeconds"]
    assert f"{in_compose:g} s" in RUNBOOK.read_text(encoding="utf-8")
