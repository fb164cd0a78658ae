"""Static checks of the deployment files.

There is no container engine or cluster in CI, so these tests parse the files
(docker-compose.yml, deploy/k8s/*.yaml, the Dockerfiles, deploy/nginx/nginx.conf)
and check that they agree with each other and with the platform's contract:
service names, commands, ports, environment variables and databases.

Every check is a function that returns a list of problems. Each one runs on
the real files (expecting no problem) and on a deliberately broken copy
(expecting the problem to be found), so a check that cannot fail is caught too.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML parses the deployment manifests")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "k8s"
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
INIT_SQL = ROOT / "deploy" / "postgres" / "init-databases.sql"
TOOLS_DOCKERFILE = ROOT / "deploy" / "docker" / "tools.Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True)
class Package:
    name: str  # the installable service package (`retention run ... <name>`)
    api: str  # compose service / k8s Deployment running the HTTP API
    worker: str  # compose service / k8s Deployment running the consumer
    db_env: str
    database: str


PACKAGES = (
    Package(
        "customer-api",
        "customer-api",
        "customer-worker",
        "RETENTION_CUSTOMER_API_DATABASE_URL",
        "retention_customer",
    ),
    Package(
        "segmentation-worker",
        "segmentation-api",
        "segmentation-worker",
        "RETENTION_SEGMENTATION_DATABASE_URL",
        "retention_segmentation",
    ),
    Package(
        "followup-scheduler",
        "followup-api",
        "followup-worker",
        "RETENTION_FOLLOWUP_DATABASE_URL",
        "retention_followup",
    ),
    Package(
        "survey-service", "survey-api", "survey-worker", "RETENTION_SURVEY_DATABASE_URL", "retention_survey"
    ),
)
DB_ENVS = frozenset(p.db_env for p in PACKAGES)
BROKER_ENV = "RETENTION_KAFKA_BOOTSTRAP"
# Settings the manifests may set (retention_shared.config.PlatformSettings; a
# test below checks against the real class when the package is installed).
KNOWN_ENV = (
    frozenset(
        {
            "RETENTION_MODE",
            "RETENTION_ENVIRONMENT",
            "RETENTION_PUBLIC_BASE_URL",
            BROKER_ENV,
            "RETENTION_TOPIC_PARTITIONS",
            "RETENTION_TOPIC_REPLICATION",
            "RETENTION_ADMIN_TOKEN",
            "RETENTION_SIGNING_SECRET",
            "RETENTION_SMTP_HOST",
            "RETENTION_SMTP_PORT",
        }
    )
    | DB_ENVS
)
API_PORT = 8000
WORKER_PORT = 9100
MAX_PARTITIONS = 12

# Gateway contract: sample request paths and the package whose API must get them.
ROUTES = {
    "followup-scheduler": [
        "/v1/customers/c-1/followups",
        "/v1/customers/c-1/followups/f-9",
        "/v1/playbooks",
        "/v1/playbooks/p-1",
        "/v1/followups",
        "/v1/followups/f-1",
    ],
    "segmentation-worker": [
        "/v1/customers/c-1/scores",
        "/v1/segments",
        "/v1/segments/s-1",
        "/v1/models",
        "/v1/models/m-1",
        "/v1/kpis",
        "/v1/segmentation/rebuild",
    ],
    "survey-service": [
        "/v1/surveys",
        "/v1/surveys/s-1",
        "/v1/responses",
        "/v1/responses/r-1",
        "/s/abc123",
    ],
    "customer-api": [
        "/v1/shops",
        "/v1/shops/sh-1",
        "/v1/customers",
        "/v1/customers/c-1",
        "/v1/events",
        "/v1/imports",
        "/v1/loyalty/accounts",
        "/docs",
        "/openapi.json",
        "/console",
        "/console/index.html",
    ],
}


def by_api(name: str) -> Package:
    return next(p for p in PACKAGES if p.name == name)


# ---------------------------------------------------------------------------
# Generic helpers
# ---------------------------------------------------------------------------

_DEFAULT_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def with_defaults(value: Any) -> str:
    """Compose interpolation with an empty shell: ${VAR:-x} -> x, ${VAR} -> ''."""
    return _DEFAULT_RE.sub(lambda m: m.group(2) or "", str(value))


def database_of(url: str) -> tuple[str | None, str]:
    """(host, database name) of a SQLAlchemy URL."""
    parts = urlsplit(url)
    return parts.hostname, parts.path.lstrip("/")


_MARKER_RE = re.compile(r"change[-_ ]?me", re.IGNORECASE)
_REAL_SECRET_PREFIXES = (
    "sk_live_",
    "sk_test_",
    "AKIA",
    "ASIA",
    "ghp_",
    "gho_",
    "github_pat_",
    "xoxb-",
    "xoxp-",
    "glpat-",
    "-----BEGIN",
)


def _entropy(token: str) -> float:
    counts = Counter(token)
    return -sum(n / len(token) * math.log2(n / len(token)) for n in counts.values())


def looks_like_real_secret(value: str) -> bool:
    """True unless the value is an obviously fake, clearly marked placeholder."""
    if any(prefix in value for prefix in _REAL_SECRET_PREFIXES):
        return True
    if not _MARKER_RE.search(value):
        return True  # every placeholder must say CHANGE_ME (or change-me)
    if "://" in value:
        password = urlsplit(value).password
        if password is not None and not _MARKER_RE.fullmatch(password):
            return True
    rest = _MARKER_RE.sub(" ", value)
    # "/" and ":" split tokens, so URL hosts, ports and paths are not taken for keys.
    for token in re.findall(r"[A-Za-z0-9+=_-]{16,}", rest):
        mixed = re.search(r"\d", token) and re.search(r"[A-Za-z]", token)
        if mixed and _entropy(token) >= 3.0:
            return True  # random-looking key material next to the marker
    return False


def secret_problems(values: Mapping[str, str], where: str) -> list[str]:
    return [
        f"{where}: {key} does not look like a marked placeholder"
        for key, value in values.items()
        if looks_like_real_secret(str(value))
    ]


# ---------------------------------------------------------------------------
# docker-compose.yml
# ---------------------------------------------------------------------------


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _listens_on(command: list[str], host: str, port: int) -> bool:
    def option(flag: str) -> str | None:
        return command[command.index(flag) + 1] if flag in command[:-1] else None

    return option("--host") == host and option("--port") == str(port)


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): with_defaults(v) for k, v in env.items()}


def compose_command(service: dict) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def has_real_healthcheck(service: dict) -> bool:
    check = service.get("healthcheck")
    if not check or check.get("disable"):
        return False
    test = check.get("test")
    if isinstance(test, str):
        return bool(test.strip())
    return bool(test) and test[0] != "NONE" and len(test) > 1


def one_shot_services(doc: dict) -> set[str]:
    """Services others wait on to *finish* (migrations and the like)."""
    return {
        name
        for service in doc["services"].values()
        for name, condition in depends_on(service).items()
        if condition == "service_completed_successfully"
    }


def compose_service_problems(doc: dict) -> list[str]:
    problems: list[str] = []
    services = doc.get("services") or {}
    one_shots = one_shot_services(doc)
    for name, service in services.items():
        if not (service.get("build") or service.get("image")):
            problems.append(f"{name}: neither build nor image")
        build = service.get("build")
        if isinstance(build, dict):
            dockerfile = ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problems.append(f"{name}: build.dockerfile {dockerfile.relative_to(ROOT)} missing")
        if name in one_shots:
            if str(service.get("restart", "no")) != "no":
                problems.append(f"{name}: one-shot service must not restart")
        elif not has_real_healthcheck(service):
            problems.append(f"{name}: no healthcheck")
        for dep, condition in depends_on(service).items():
            if dep not in services:
                problems.append(f"{name}: depends on unknown service {dep}")
            elif condition == "service_healthy" and not has_real_healthcheck(services[dep]):
                problems.append(f"{name}: waits for {dep} to be healthy, but it has no healthcheck")
    return problems


def compose_app_problems(doc: dict) -> list[str]:
    problems: list[str] = []
    services = doc.get("services") or {}
    for pkg in PACKAGES:
        for role, name in (("api", pkg.api), ("consumer", pkg.worker)):
            service = services.get(name)
            if service is None:
                problems.append(f"{name}: missing ({role} of {pkg.name})")
                continue
            port = API_PORT if role == "api" else WORKER_PORT
            command = compose_command(service)
            if command[:4] != ["retention", "run", role, pkg.name]:
                problems.append(f"{name}: command {command} does not run the {role} of {pkg.name}")
            if not _listens_on(command, "0.0.0.0", port):
                problems.append(f"{name}: command does not listen on 0.0.0.0:{port}")
            check = json.dumps((service.get("healthcheck") or {}).get("test"))
            if f":{port}/" not in check:
                problems.append(f"{name}: healthcheck does not probe port {port}")
            if "container_name" in service or service.get("ports"):
                problems.append(f"{name}: container_name/ports prevent --scale")
            problems += _app_env_problems(name, pkg, compose_env(service), services)
            deps = depends_on(service)
            for dep, wanted in (
                ("postgres", "service_healthy"),
                ("kafka", "service_healthy"),
                ("migrate", "service_completed_successfully"),
            ):
                if deps.get(dep) != wanted:
                    problems.append(f"{name}: should depend on {dep} with {wanted}")
    return problems


def _app_env_problems(name: str, pkg: Package, env: dict[str, str], services: dict) -> list[str]:
    problems = []
    unknown = sorted(k for k in env if k not in KNOWN_ENV)
    if unknown:
        problems.append(f"{name}: unknown env vars {unknown}")
    if env.get("RETENTION_MODE") != "distributed":
        problems.append(f"{name}: RETENTION_MODE should be distributed")
    broker = env.get(BROKER_ENV, "")
    for address in filter(None, broker.split(",")):
        if address.split(":")[0] not in services:
            problems.append(f"{name}: broker {address} is not a compose service")
    if not broker:
        problems.append(f"{name}: {BROKER_ENV} not set")
    url = env.get(pkg.db_env)
    if not url:
        problems.append(f"{name}: {pkg.db_env} not set")
    else:
        host, database = database_of(url)
        if database != pkg.database:
            problems.append(f"{name}: {pkg.db_env} points at {database}, not {pkg.database}")
        if host not in services:
            problems.append(f"{name}: database host {host} is not a compose service")
    others = sorted(DB_ENVS & env.keys() - {pkg.db_env})
    if others:
        problems.append(f"{name}: gets other services' databases {others}")
    return problems


def compose_infra_problems(doc: dict) -> list[str]:
    problems: list[str] = []
    services = doc.get("services") or {}

    kafka = services.get("kafka", {})
    kafka_env = compose_env(kafka)
    if kafka.get("image") != "apache/kafka:4.3.1":
        problems.append("kafka: image should be apache/kafka:4.3.1")
    roles = set(kafka_env.get("KAFKA_PROCESS_ROLES", "").split(","))
    if roles != {"broker", "controller"}:
        problems.append("kafka: not a single-node KRaft broker+controller")
    advertised = {
        listener.split("://", 1)[-1]
        for listener in kafka_env.get("KAFKA_ADVERTISED_LISTENERS", "").split(",")
    }
    for pkg in PACKAGES:
        for name in (pkg.api, pkg.worker):
            broker = compose_env(services.get(name, {})).get(BROKER_ENV)
            if broker and broker not in advertised:
                problems.append(f"{name}: {BROKER_ENV}={broker} is not advertised by kafka")

    postgres = services.get("postgres", {})
    if postgres.get("image") != "postgres:16":
        problems.append("postgres: image should be postgres:16")
    if "pg_isready" not in json.dumps((postgres.get("healthcheck") or {}).get("test")):
        problems.append("postgres: healthcheck should use pg_isready")
    mounts = [str(v) for v in postgres.get("volumes") or []]
    if not any(
        "deploy/postgres/init-databases.sql" in m and "/docker-entrypoint-initdb.d/" in m for m in mounts
    ):
        problems.append("postgres: init-databases.sql not mounted into docker-entrypoint-initdb.d")
    created = set(re.findall(r"CREATE\s+DATABASE\s+(\w+)", INIT_SQL.read_text(), re.IGNORECASE))
    for pkg in PACKAGES:
        if pkg.database not in created:
            problems.append(f"postgres: init script does not create {pkg.database}")

    migrate = services.get("migrate", {})
    script = " ".join(compose_command(migrate))
    for needed in ("retention migrate all", "retention topics ensure"):
        if needed not in script:
            problems.append(f"migrate: does not run `{needed}`")
    migrate_env = compose_env(migrate)
    for pkg in PACKAGES:
        url = migrate_env.get(pkg.db_env)
        if not url or database_of(url)[1] != pkg.database:
            problems.append(f"migrate: {pkg.db_env} missing or wrong")

    gateway = services.get("nginx", {})
    if gateway.get("image") != "nginx:1.27-alpine":
        problems.append("nginx: image should be nginx:1.27-alpine")
    if not any(str(p).split(":")[-2:-1] == ["8080"] for p in gateway.get("ports") or []):
        problems.append("nginx: host port 8080 not published")
    if not any("deploy/nginx/nginx.conf" in str(v) for v in gateway.get("volumes") or []):
        problems.append("nginx: deploy/nginx/nginx.conf not mounted")
    return problems


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


def test_compose_every_service_has_an_image_and_a_healthcheck(compose):
    assert compose_service_problems(compose) == []


def test_compose_app_services_commands_env_and_databases(compose):
    assert compose_app_problems(compose) == []


def test_compose_infrastructure(compose):
    assert compose_infra_problems(compose) == []


def test_compose_segmentation_worker_is_the_scalable_consumer(compose):
    # `docker compose up --scale segmentation-worker=3` must add consumers.
    service = compose["services"]["segmentation-worker"]
    assert compose_command(service)[:4] == ["retention", "run", "consumer", "segmentation-worker"]
    assert "container_name" not in service and not service.get("ports")


def test_compose_dev_secrets_are_marked_placeholders(compose):
    for name, service in compose["services"].items():
        env = compose_env(service)
        secret_keys: tuple[str, ...] = ("RETENTION_ADMIN_TOKEN", "RETENTION_SIGNING_SECRET")
        values = {k: env[k] for k in secret_keys if k in env}
        assert secret_problems(values, name) == []


def test_compose_checks_catch_broken_files(compose):
    broken = copy.deepcopy(compose)
    services = broken["services"]
    del services["kafka"]["healthcheck"]
    services["postgres"].pop("image")
    services["survey-worker"]["container_name"] = "survey-worker"
    services["followup-worker"]["environment"] = dict(compose_env(services["followup-worker"]))
    services["followup-worker"]["environment"]["RETENTION_FOLLOWUP_DATABASE_URL"] = (
        "postgresql+psycopg://retention:retention@postgres:5432/retention_survey"
    )
    services["customer-api"]["environment"] = dict(compose_env(services["customer-api"]))
    del services["customer-api"]["environment"][BROKER_ENV]
    services["segmentation-worker"]["command"] = ["retention", "run", "api", "segmentation-worker"]
    services["migrate"]["command"] = ["retention", "migrate", "all"]
    no_host = ["retention", "run", "consumer", "customer-api", "--port", "9100"]
    services["customer-worker"]["command"] = no_host

    service_problems = compose_service_problems(broken)
    assert "kafka: no healthcheck" in service_problems
    assert "postgres: neither build nor image" in service_problems
    assert any("waits for kafka to be healthy" in p for p in service_problems)

    app_problems = compose_app_problems(broken)
    assert "survey-worker: container_name/ports prevent --scale" in app_problems
    assert any(
        p.startswith("followup-worker: RETENTION_FOLLOWUP_DATABASE_URL points at retention_survey")
        for p in app_problems
    )
    assert f"customer-api: {BROKER_ENV} not set" in app_problems
    assert any(p.startswith("segmentation-worker: command") for p in app_problems)
    assert "customer-worker: command does not listen on 0.0.0.0:9100" in app_problems

    assert "migrate: does not run `retention topics ensure`" in compose_infra_problems(broken)


def test_compose_env_accepts_list_form_and_defaults():
    service = {"environment": ["A=1", "B=${X:-fallback}", "C=${UNSET}"]}
    assert compose_env(service) == {"A": "1", "B": "fallback", "C": ""}


# ---------------------------------------------------------------------------
# Dockerfiles
# ---------------------------------------------------------------------------


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    if pending:
        keyword, _, args = pending.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def _non_root_user_problems(instructions: list[tuple[str, str]], where: str) -> list[str]:
    users = [args for keyword, args in instructions if keyword == "USER"]
    if not users:
        return [f"{where}: no USER (runs as root)"]
    user = users[-1].split(":")[0]
    if user in ("root", "0"):
        return [f"{where}: final USER is root"]
    last_user = max(i for i, (k, _) in enumerate(instructions) if k == "USER")
    if any(k == "CMD" for k, _ in instructions[:last_user]):
        return [f"{where}: USER comes after CMD"]
    return []


def dockerfile_problems(text: str, pkg: Package) -> list[str]:
    where = f"services/{pkg.name}/Dockerfile"
    instructions = parse_dockerfile(text)
    problems = _non_root_user_problems(instructions, where)
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    if not froms or froms[-1].split()[0] != "python:3.11-slim":
        problems.append(f"{where}: final stage should be FROM python:3.11-slim")
    checks = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
    if not checks or "CMD" not in checks[-1] or checks[-1].strip().upper() == "NONE":
        problems.append(f"{where}: no HEALTHCHECK")
    elif "/healthz" not in checks[-1] or str(API_PORT) not in checks[-1]:
        problems.append(f"{where}: HEALTHCHECK does not probe /healthz on {API_PORT}")
    copies = " ".join(args for keyword, args in instructions if keyword == "COPY")
    for source in ("shared/", f"services/{pkg.name}/"):
        if source not in copies:
            problems.append(f"{where}: does not COPY {source}")
    installs = " ".join(args for keyword, args in instructions if keyword == "RUN" and "pip install" in args)
    if "shared" not in installs or f"services/{pkg.name}" not in installs:
        problems.append(f"{where}: does not pip install shared and the service")
    if re.search(r"\[(dev|test)", installs) or " -e " in f" {installs} ":
        problems.append(f"{where}: installs dev extras or editable packages")
    cmds = [args for keyword, args in instructions if keyword == "CMD"]
    expected = ["retention", "run", "api", pkg.name, "--host", "0.0.0.0", "--port", str(API_PORT)]
    try:
        cmd = json.loads(cmds[-1]) if cmds else None
    except json.JSONDecodeError:
        cmd = None
    if cmd != expected:
        problems.append(f"{where}: CMD should be {expected}")
    return problems


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.name)
def test_service_dockerfile(pkg):
    path = ROOT / "services" / pkg.name / "Dockerfile"
    assert path.is_file(), f"missing {path.relative_to(ROOT)}"
    assert dockerfile_problems(path.read_text(), pkg) == []


def test_tools_dockerfile_installs_every_service_as_non_root():
    instructions = parse_dockerfile(TOOLS_DOCKERFILE.read_text())
    assert _non_root_user_problems(instructions, "tools.Dockerfile") == []
    installs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    for pkg in PACKAGES:
        assert f"services/{pkg.name}" in installs


def test_dockerfile_checks_catch_broken_files():
    pkg = PACKAGES[1]
    good = (ROOT / "services" / pkg.name / "Dockerfile").read_text()
    no_user = "\n".join(line for line in good.splitlines() if not line.startswith("USER"))
    assert any("no USER" in p for p in dockerfile_problems(no_user, pkg))
    root_user = good.replace("USER 10001:10001", "USER root")
    assert any("final USER is root" in p for p in dockerfile_problems(root_user, pkg))
    no_check = re.sub(r"HEALTHCHECK[^\n]*\\\n[^\n]*\n", "", good)
    assert any("no HEALTHCHECK" in p for p in dockerfile_problems(no_check, pkg))
    wrong_cmd = good.replace(f'"api", "{pkg.name}"', '"api", "customer-api"')
    assert any("CMD should be" in p for p in dockerfile_problems(wrong_cmd, pkg))
    # A Dockerfile for one service is not valid for another.
    assert dockerfile_problems(good, PACKAGES[0])


def test_parse_dockerfile_joins_continuations():
    text = 'FROM x\n# comment\nRUN a \\\n    && b\nCMD ["c"]\n'
    assert parse_dockerfile(text) == [("FROM", "x"), ("RUN", "a && b"), ("CMD", '["c"]')]


def test_dockerignore_excludes_local_state():
    entries = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".git", ".venv", "var", "**/node_modules", "**/__pycache__"):
        assert needed in entries


# ---------------------------------------------------------------------------
# deploy/nginx/nginx.conf
# ---------------------------------------------------------------------------


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None


def _tokens(text: str) -> list[str]:
    tokens, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "#":
            i = text.find("\n", i) if "\n" in text[i:] else len(text)
        elif ch in "{};":
            tokens.append(ch)
            i += 1
        elif ch in "'\"":
            end = text.index(ch, i + 1)
            tokens.append(text[i + 1 : end])
            i = end + 1
        else:
            j = i
            while j < len(text) and not text[j].isspace() and text[j] not in "{};":
                j += 1
            tokens.append(text[i:j])
            i = j
    return tokens


def parse_nginx(text: str) -> list[Directive]:
    tokens = _tokens(text)
    pos = 0

    def block() -> list[Directive]:
        nonlocal pos
        items: list[Directive] = []
        while pos < len(tokens):
            if tokens[pos] == "}":
                pos += 1
                return items
            words = []
            while tokens[pos] not in ("{", ";", "}"):
                words.append(tokens[pos])
                pos += 1
            if tokens[pos] == "{":
                pos += 1
                items.append(Directive(words[0], words[1:], block()))
            else:
                pos += 1
                items.append(Directive(words[0], words[1:]))
        return items

    return block()


def _find(items: list[Directive] | None, name: str) -> list[Directive]:
    return [d for d in items or [] if d.name == name]


@dataclass
class Location:
    modifier: str  # "", "=", "^~", "~", "~*"
    pattern: str
    upstream: str | None  # host of proxy_pass, None if answered by nginx itself


def nginx_locations(text: str) -> list[Location]:
    [http] = _find(parse_nginx(text), "http")
    [server] = _find(http.block, "server")
    variables = {d.args[0]: d.args[1] for d in _find(server.block, "set")}
    locations = []
    for loc in _find(server.block, "location"):
        modifier, pattern = loc.args if len(loc.args) == 2 else ["", loc.args[0]]
        local = dict(variables, **{d.args[0]: d.args[1] for d in _find(loc.block, "set")})
        upstream = None
        passes = _find(loc.block, "proxy_pass")
        if passes:
            target = passes[0].args[0]
            target = local.get(target, target)
            upstream = urlsplit(target).hostname
        locations.append(Location(modifier, pattern, upstream))
    return locations


def nginx_route(locations: list[Location], uri: str) -> Location | None:
    """Which location nginx picks for a path (its documented matching order)."""
    for loc in locations:
        if loc.modifier == "=" and loc.pattern == uri:
            return loc
    prefixes = [loc for loc in locations if loc.modifier in ("", "^~") and uri.startswith(loc.pattern)]
    longest = max(prefixes, key=lambda loc: len(loc.pattern), default=None)
    if longest is not None and longest.modifier == "^~":
        return longest
    for loc in locations:
        if loc.modifier == "~" and re.search(loc.pattern, uri):
            return loc
        if loc.modifier == "~*" and re.search(loc.pattern, uri, re.IGNORECASE):
            return loc
    return longest


def nginx_routing_problems(text: str) -> list[str]:
    locations = nginx_locations(text)
    problems = []
    for package, paths in ROUTES.items():
        wanted = by_api(package).api
        for path in paths:
            loc = nginx_route(locations, path)
            got = loc.upstream if loc else None
            if got != wanted:
                problems.append(f"{path}: routed to {got}, expected {wanted}")
    return problems


def nginx_scaling_problems(text: str) -> list[str]:
    """Scaled replicas are only seen if names are re-resolved at request time."""
    [http] = _find(parse_nginx(text), "http")
    problems = []
    resolvers = [d.args for d in _find(http.block, "resolver")]
    if not any("127.0.0.11" in args for args in resolvers):
        problems.append("no resolver 127.0.0.11 (Docker DNS)")
    for server in _find(http.block, "server"):
        for loc in _find(server.block, "location"):
            for proxy in _find(loc.block, "proxy_pass"):
                if not proxy.args[0].startswith("$"):
                    problems.append(
                        f"location {' '.join(loc.args)}: proxy_pass without a variable "
                        "is resolved once at startup"
                    )
    return problems


@pytest.fixture(scope="module")
def nginx_text() -> str:
    return NGINX_CONF.read_text()


def test_nginx_routes_every_prefix_to_its_service(nginx_text):
    assert nginx_routing_problems(nginx_text) == []


def test_nginx_resolves_upstreams_at_request_time(nginx_text):
    assert nginx_scaling_problems(nginx_text) == []


def test_nginx_upstreams_are_compose_api_services(nginx_text, compose):
    upstreams = {loc.upstream for loc in nginx_locations(nginx_text) if loc.upstream}
    assert upstreams == {p.api for p in PACKAGES}
    for name in upstreams:
        command = compose_command(compose["services"][name])
        assert command[:3] == ["retention", "run", "api"]
    for target in re.findall(r"http://([\w-]+):(\d+)", nginx_text):
        assert target[1] == str(API_PORT), target


def test_nginx_checks_catch_broken_config(nginx_text):
    # Regex turned into a plain prefix: the per-customer followups go to customer-api.
    broken = nginx_text.replace(
        "location ~ ^/v1/customers/[^/]+/followups", "location /v1/customers/x/followups"
    )
    assert "/v1/customers/c-1/followups: routed to customer-api, expected followup-api" in (
        nginx_routing_problems(broken)
    )
    # ^~ on the catch-all stops the regex locations from being considered.
    broken = nginx_text.replace("location /v1/ {", "location ^~ /v1/customers {")
    assert any(p.startswith("/v1/customers/c-1/scores") for p in nginx_routing_problems(broken))
    # An upstream pointed at the wrong service.
    broken = nginx_text.replace(
        "location /v1/kpis {\n            proxy_pass $segmentation_api;",
        "location /v1/kpis {\n            proxy_pass $customer_api;",
    )
    assert nginx_routing_problems(broken) == ["/v1/kpis: routed to customer-api, expected segmentation-api"]
    # Static upstream: scaled replicas would never be seen.
    broken = nginx_text.replace("proxy_pass $survey_api;", "proxy_pass http://survey-api:8000;")
    assert nginx_scaling_problems(broken)


def test_nginx_route_follows_nginx_precedence():
    conf = """http { server {
        location = /exact { proxy_pass http://exact; }
        location ^~ /static/ { proxy_pass http://static; }
        location /a/ { proxy_pass http://short; }
        location /a/b/ { proxy_pass http://long; }
        location ~ \\.png$ { proxy_pass http://regex1; }
        location ~* \\.PNG$ { proxy_pass http://regex2; }
        location / { return 404; }
    } }"""
    locations = nginx_locations(conf)

    def host(uri: str) -> str | None:
        loc = nginx_route(locations, uri)
        assert loc is not None
        return loc.upstream

    assert host("/exact") == "exact"
    assert host("/exact/more") is None  # "=" is exact only; falls to "/"
    assert host("/static/x.png") == "static"  # ^~ beats regex
    assert host("/a/b/c") == "long"  # longest prefix
    assert host("/a/b/c.png") == "regex1"  # regex beats plain prefix, first match wins
    assert host("/a/x.Png") == "regex2"


# ---------------------------------------------------------------------------
# deploy/k8s
# ---------------------------------------------------------------------------


def load_k8s() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def objects(docs: list[tuple[str, dict]], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in docs if d.get("kind") == kind}


def secret_values(secret: dict) -> dict[str, str]:
    values = dict(secret.get("stringData") or {})
    for key, encoded in (secret.get("data") or {}).items():
        values[key] = base64.b64decode(encoded).decode()
    return values


def resolve_env(container: dict, docs) -> tuple[dict[str, str], list[str]]:
    configmaps = {n: c.get("data") or {} for n, c in objects(docs, "ConfigMap").items()}
    secrets = {n: secret_values(s) for n, s in objects(docs, "Secret").items()}
    env: dict[str, str] = {}
    problems: list[str] = []
    for source in container.get("envFrom") or []:
        for ref, store in (("configMapRef", configmaps), ("secretRef", secrets)):
            if ref in source:
                name = source[ref]["name"]
                if name not in store:
                    problems.append(f"{container['name']}: {ref} {name} not found")
                env.update(store.get(name, {}))
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        value_from = item.get("valueFrom") or {}
        for ref, store in (("secretKeyRef", secrets), ("configMapKeyRef", configmaps)):
            if ref in value_from:
                name, key = value_from[ref]["name"], value_from[ref]["key"]
                if key not in store.get(name, {}):
                    problems.append(f"{container['name']}: {ref} {name}/{key} not found")
                else:
                    env[item["name"]] = str(store[name][key])
    return env, problems


def _probe_problems(where: str, container: dict) -> list[str]:
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
    problems = []
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (container.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path:
            problems.append(f"{where}: {probe} should GET {path}")
        port = get.get("port")
        if port not in ports and port not in ports.values():
            problems.append(f"{where}: {probe} port {port} is not a container port")
    return problems


def k8s_workload_problems(docs) -> list[str]:
    problems = []
    for kind in ("Deployment", "Job"):
        for name, obj in objects(docs, kind).items():
            spec = obj["spec"]
            pod = spec["template"]["spec"]
            if not (pod.get("securityContext") or {}).get("runAsNonRoot"):
                problems.append(f"{kind}/{name}: pod does not set runAsNonRoot")
            if kind == "Deployment":
                selector = spec["selector"]["matchLabels"]
                labels = spec["template"]["metadata"]["labels"]
                if any(labels.get(k) != v for k, v in selector.items()):
                    problems.append(f"Deployment/{name}: selector does not match pod labels")
            for container in pod["containers"]:
                where = f"{kind}/{name}/{container['name']}"
                if not container.get("image"):
                    problems.append(f"{where}: no image")
                if kind == "Deployment":
                    problems += _probe_problems(where, container)
    return problems


def _partitions(docs) -> int:
    config = objects(docs, "ConfigMap").get("retention-config", {}).get("data") or {}
    return int(config.get("RETENTION_TOPIC_PARTITIONS", MAX_PARTITIONS))


def k8s_app_problems(docs) -> list[str]:
    problems = []
    deployments = objects(docs, "Deployment")
    services = objects(docs, "Service")
    hpas = {
        n: h for _, h in docs if h.get("kind") == "HorizontalPodAutoscaler" for n in [h["metadata"]["name"]]
    }
    partitions = _partitions(docs)
    if partitions > MAX_PARTITIONS:
        problems.append(f"RETENTION_TOPIC_PARTITIONS is {partitions}, the documented default is 12")
    for pkg in PACKAGES:
        for role, name, port in (("api", pkg.api, API_PORT), ("consumer", pkg.worker, WORKER_PORT)):
            deployment = deployments.get(name)
            if deployment is None:
                problems.append(f"Deployment/{name}: missing")
                continue
            [container] = deployment["spec"]["template"]["spec"]["containers"]
            command = [str(c) for c in (container.get("command") or []) + (container.get("args") or [])]
            if command[:4] != ["retention", "run", role, pkg.name]:
                problems.append(f"Deployment/{name}: command {command} is not the {role} of {pkg.name}")
            # The CLI binds 127.0.0.1 by default, which kubelet probes cannot reach.
            if not _listens_on(command, "0.0.0.0", port):
                problems.append(f"Deployment/{name}: command does not listen on 0.0.0.0:{port}")
            if not container.get("image", "").startswith(f"retention/{pkg.name}:"):
                problems.append(f"Deployment/{name}: image is not retention/{pkg.name}")
            env, env_problems = resolve_env(container, docs)
            problems += [f"Deployment/{name}: {p}" for p in env_problems]
            problems += [f"Deployment/{p}" for p in _k8s_env_problems(name, pkg, env)]

            hpa = hpas.get(name)
            if hpa is None:
                problems.append(f"HorizontalPodAutoscaler/{name}: missing")
            else:
                if hpa.get("apiVersion") != "autoscaling/v2":
                    problems.append(f"HorizontalPodAutoscaler/{name}: not autoscaling/v2")
                target = hpa["spec"]["scaleTargetRef"]
                if (target.get("kind"), target.get("name")) != ("Deployment", name):
                    problems.append(f"HorizontalPodAutoscaler/{name}: targets {target}")
                low, high = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
                if low > high:
                    problems.append(f"HorizontalPodAutoscaler/{name}: minReplicas > maxReplicas")
                if role == "consumer" and high > min(partitions, MAX_PARTITIONS):
                    problems.append(
                        f"HorizontalPodAutoscaler/{name}: maxReplicas {high} exceeds "
                        f"the {partitions} topic partitions"
                    )
                if "replicas" in deployment["spec"]:
                    problems.append(f"Deployment/{name}: spec.replicas fights the HPA")

        service = services.get(pkg.api)
        if service is None:
            problems.append(f"Service/{pkg.api}: missing")
        elif deployments.get(pkg.api):
            labels = deployments[pkg.api]["spec"]["template"]["metadata"]["labels"]
            if any(labels.get(k) != v for k, v in service["spec"]["selector"].items()):
                problems.append(f"Service/{pkg.api}: selector does not match the API pods")
            [container] = deployments[pkg.api]["spec"]["template"]["spec"]["containers"]
            names = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                if target not in names and target not in names.values():
                    problems.append(f"Service/{pkg.api}: targetPort {target} not exposed by the pod")
    return problems


def _k8s_env_problems(name: str, pkg: Package, env: dict[str, str]) -> list[str]:
    problems = []
    unknown = sorted(k for k in env if k not in KNOWN_ENV)
    if unknown:
        problems.append(f"{name}: unknown env vars {unknown}")
    if not env.get(BROKER_ENV):
        problems.append(f"{name}: {BROKER_ENV} not set")
    if env.get("RETENTION_MODE") != "distributed":
        problems.append(f"{name}: RETENTION_MODE should be distributed")
    url = env.get(pkg.db_env)
    if not url:
        problems.append(f"{name}: {pkg.db_env} not set")
    elif database_of(url)[1] != pkg.database:
        problems.append(f"{name}: {pkg.db_env} points at {database_of(url)[1]}, not {pkg.database}")
    others = sorted(DB_ENVS & env.keys() - {pkg.db_env})
    if others:
        problems.append(f"{name}: gets other services' databases {others}")
    return problems


def k8s_migration_problems(docs) -> list[str]:
    jobs = objects(docs, "Job")
    if not jobs:
        return ["no migration Job"]
    problems = []
    for name, job in jobs.items():
        [container] = job["spec"]["template"]["spec"]["containers"]
        script = " ".join(str(c) for c in (container.get("command") or []) + (container.get("args") or []))
        for needed in ("retention migrate all", "retention topics ensure"):
            if needed not in script:
                problems.append(f"Job/{name}: does not run `{needed}`")
        env, env_problems = resolve_env(container, docs)
        problems += [f"Job/{name}: {p}" for p in env_problems]
        for pkg in PACKAGES:
            if database_of(env.get(pkg.db_env, ""))[1] != pkg.database:
                problems.append(f"Job/{name}: {pkg.db_env} missing or wrong")
        if job["spec"]["template"]["spec"].get("restartPolicy") not in ("Never", "OnFailure"):
            problems.append(f"Job/{name}: restartPolicy must be Never or OnFailure")
    return problems


def k8s_kustomization_problems(kustomization: dict, files: set[str]) -> list[str]:
    listed = list(kustomization.get("resources") or [])
    problems = [f"{r} listed but missing" for r in listed if r not in files]
    problems += [f"{f} not listed in kustomization.yaml" for f in sorted(files - set(listed))]
    return problems


@pytest.fixture(scope="module")
def k8s_docs() -> list[tuple[str, dict]]:
    return load_k8s()


def _manifest_files() -> set[str]:
    return {p.name for p in K8S_DIR.glob("*.y*ml")} - {"kustomization.yaml"}


def test_k8s_every_document_parses_and_has_kind(k8s_docs):
    assert k8s_docs
    for filename, doc in k8s_docs:
        assert doc.get("kind"), filename
        assert doc.get("apiVersion"), filename


def test_k8s_workloads_have_probes_and_run_as_non_root(k8s_docs):
    assert k8s_workload_problems(k8s_docs) == []


def test_k8s_apps_deployments_services_hpas_and_env(k8s_docs):
    assert k8s_app_problems(k8s_docs) == []


def test_k8s_consumer_hpas_are_capped_at_the_partition_count(k8s_docs):
    hpas = objects(k8s_docs, "HorizontalPodAutoscaler")
    for pkg in PACKAGES:
        assert hpas[pkg.worker]["spec"]["maxReplicas"] <= MAX_PARTITIONS


def test_k8s_migration_job(k8s_docs):
    assert k8s_migration_problems(k8s_docs) == []


def test_k8s_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    assert k8s_kustomization_problems(kustomization, _manifest_files()) == []


def test_k8s_secret_template_holds_only_placeholders(k8s_docs):
    secrets = objects(k8s_docs, "Secret")
    assert secrets
    for name, secret in secrets.items():
        values = secret_values(secret)
        assert {"RETENTION_ADMIN_TOKEN", "RETENTION_SIGNING_SECRET"} | DB_ENVS <= values.keys()
        assert secret_problems(values, f"Secret/{name}") == []


def test_k8s_checks_catch_broken_manifests(k8s_docs):
    broken = copy.deepcopy(k8s_docs)
    deployments = objects(broken, "Deployment")
    hpas = objects(broken, "HorizontalPodAutoscaler")
    hpas["segmentation-worker"]["spec"]["maxReplicas"] = 20
    api = deployments["survey-api"]["spec"]["template"]["spec"]["containers"][0]
    del api["readinessProbe"]
    api["livenessProbe"]["httpGet"]["port"] = "metrics"
    worker = deployments["followup-worker"]["spec"]["template"]["spec"]["containers"][0]
    worker["env"] = [e for e in worker["env"] if e["name"] != "RETENTION_FOLLOWUP_DATABASE_URL"]
    worker["env"].append(
        {
            "name": "RETENTION_SURVEY_DATABASE_URL",
            "valueFrom": {
                "secretKeyRef": {"name": "retention-secrets", "key": "RETENTION_SURVEY_DATABASE_URL"}
            },
        }
    )
    deployments["customer-worker"]["spec"]["template"]["spec"]["securityContext"] = {}
    deployments["customer-api"]["spec"]["template"]["spec"]["containers"][0]["envFrom"] = []
    consumer = deployments["survey-worker"]["spec"]["template"]["spec"]["containers"][0]
    consumer["command"] = ["retention", "run", "consumer", "survey-service", "--port", "9100"]

    workload = k8s_workload_problems(broken)
    assert "Deployment/survey-api/api: readinessProbe should GET /readyz" in workload
    assert "Deployment/survey-api/api: livenessProbe port metrics is not a container port" in workload
    assert "Deployment/customer-worker: pod does not set runAsNonRoot" in workload

    apps = k8s_app_problems(broken)
    assert (
        "HorizontalPodAutoscaler/segmentation-worker: maxReplicas 20 exceeds the 12 topic partitions" in apps
    )
    assert "Deployment/followup-worker: RETENTION_FOLLOWUP_DATABASE_URL not set" in apps
    assert any("followup-worker: gets other services' databases" in p for p in apps)
    assert f"Deployment/customer-api: {BROKER_ENV} not set" in apps
    assert "Deployment/survey-worker: command does not listen on 0.0.0.0:9100" in apps

    assert k8s_kustomization_problems({"resources": ["a.yaml", "gone.yaml"]}, {"a.yaml", "b.yaml"}) == [
        "gone.yaml listed but missing",
        "b.yaml not listed in kustomization.yaml",
    ]


def test_placeholder_detector_flags_real_looking_secrets():
    fine = {
        "token": "CHANGE_ME-admin-token",
        "url": "postgresql+psycopg://retention_survey:CHANGE_ME@postgres:5432/retention_survey",
        "dev": "dev-only-signing-secret-change-me",
    }
    assert secret_problems(fine, "fixture") == []
    leaked = {
        "no_marker": "super-secret-admin-token",
        "random": "CHANGE_ME k3J9sd8f7Gh2Lq0Zp4XwQe",
        "hex": "change-me-9f86d081884c7d659a2feaa0c55ad015",
        "url_password": "postgresql+psycopg://svc:S3cretPassw0rd@db:5432/retention_survey?x=CHANGE_ME",
        "aws": "CHANGE_ME AKIAIOSFODNN7EXAMPLE",
    }
    flagged = {p.split(": ")[1].split(" ")[0] for p in secret_problems(leaked, "fixture")}
    assert flagged == set(leaked)


def _manifest_env_names(compose: dict, k8s_docs) -> set[str]:
    names = {k for service in compose["services"].values() for k in compose_env(service)}
    names |= {k for c in objects(k8s_docs, "ConfigMap").values() for k in c.get("data") or {}}
    names |= {k for s in objects(k8s_docs, "Secret").values() for k in secret_values(s)}
    for kind in ("Deployment", "Job"):
        for obj in objects(k8s_docs, kind).values():
            for container in obj["spec"]["template"]["spec"]["containers"]:
                names |= {e["name"] for e in container.get("env") or []}
    return {n for n in names if n.startswith("RETENTION_")}


def test_manifest_env_vars_are_known(compose, k8s_docs):
    assert _manifest_env_names(compose, k8s_docs) <= KNOWN_ENV


def test_manifest_env_vars_are_platform_settings(compose, k8s_docs):
    """Catches a setting renamed in code but not in the manifests (needs retention_shared)."""
    config = pytest.importorskip("retention_shared.config")
    fields = {f"RETENTION_{name.upper()}" for name in config.PlatformSettings.model_fields}
    assert fields >= KNOWN_ENV
    assert _manifest_env_names(compose, k8s_docs) <= fields


# ---------------------------------------------------------------------------
# The gateway against the services' real routes
# ---------------------------------------------------------------------------

# Routes that no OpenAPI document lists (HTML pages and signed links), by package.
UNDOCUMENTED_ROUTES = {
    "survey-service": ["/s/sample-token"],
    "followup-scheduler": ["/u/sample-token"],
    "customer-api": ["/console", "/console/customers/c-1"],
}


def _service_paths(package: str, data_dir: Path) -> list[str]:
    """Every path in the service's OpenAPI document, with sample values for its parameters."""
    from retention_shared.config import Mode, PlatformSettings
    from retention_shared.platform import app_with_workers, assemble
    from retention_shared.runtime import service_named

    settings = PlatformSettings(mode=Mode.EMBEDDED, data_dir=data_dir, topic_namespace="")
    assembly = assemble([service_named(package)], settings, migrate=True)
    try:
        app = app_with_workers(assembly, package, package, run_workers=False)
        templates = list(app.openapi()["paths"])
    finally:
        assembly.dispose()
    platform_paths = {"/healthz", "/readyz", "/metrics"}
    return [re.sub(r"\{[^}]+\}", "sample-1", path) for path in templates if path not in platform_paths]


@pytest.mark.parametrize("package", [p.name for p in PACKAGES])
def test_nginx_routes_every_documented_path_to_the_service_that_serves_it(nginx_text, package, tmp_path):
    locations = nginx_locations(nginx_text)
    wanted = by_api(package).api
    paths = _service_paths(package, tmp_path) + UNDOCUMENTED_ROUTES.get(package, [])
    misrouted = []
    for path in paths:
        location = nginx_route(locations, path)
        got = location.upstream if location else None
        if got != wanted:
            misrouted.append(f"{path}: routed to {got}, expected {wanted}")
    assert misrouted == []
