"""Import an AgentScope `.env` file: the seed's variable names become SandboxApp traits.

People migrating from `runtime-sandbox-server --config custom.env` keep their file. Each
known variable sets one trait; an unknown name or a value that does not parse is an error
naming the line, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import json
import re
from typing import Any

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


class EnvFileError(ValueError):
    pass


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _type_list(value: str) -> list[str]:
    if value.startswith("["):
        parsed = json.loads(value)
        if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
            raise ValueError("expected a JSON list of strings")
        return parsed
    return [v.strip() for v in value.split(",") if v.strip()]


def _json_dict(value: str) -> dict:
    if not value or value.lower() == "none":
        return {}
    parsed = json.loads(value)
    if not isinstance(parsed, dict):
        raise ValueError("expected a JSON object")
    return parsed


def _port_range(value: str) -> list[int]:
    parsed = json.loads(value.replace("(", "[").replace(")", "]"))
    if not (
        isinstance(parsed, list) and len(parsed) == 2 and all(isinstance(p, int) for p in parsed)
    ):
        raise ValueError("expected [first, last]")
    return parsed


def _deployment(value: str) -> str:
    return value.lower()


# seed variable → (section, trait, parser)
MAPPING: dict[str, tuple[str, str, Any]] = {
    "HOST": ("ServerApp", "ip", str),
    "PORT": ("ServerApp", "port", int),
    "WORKERS": ("SandboxApp", "workers", int),
    "DEBUG": ("ServerApp", "log_level", lambda v: "DEBUG" if _bool(v) else "INFO"),
    "BEARER_TOKEN": ("SandboxApp", "bearer_token", str),
    "DEFAULT_SANDBOX_TYPE": ("SandboxApp", "sandbox_types", _type_list),
    "POOL_SIZE": ("SandboxApp", "pool_size", int),
    "AUTO_CLEANUP": ("SandboxApp", "auto_cleanup", _bool),
    "CONTAINER_PREFIX_KEY": ("SandboxApp", "container_prefix", str),
    "CONTAINER_DEPLOYMENT": ("SandboxApp", "backend", _deployment),
    "DEFAULT_MOUNT_DIR": ("SandboxApp", "mount_dir", str),
    "READONLY_MOUNTS": ("SandboxApp", "readonly_mounts", _json_dict),
    "PORT_RANGE": ("SandboxApp", "port_range", _port_range),
    "HEARTBEAT_TIMEOUT": ("SandboxApp", "heartbeat_timeout", float),
    "WATCHER_SCAN_INTERVAL": ("SandboxApp", "watcher_interval", float),
    "RELEASED_KEY_TTL": ("SandboxApp", "released_ttl", float),
    "RELEASE_KET_TTL": ("SandboxApp", "released_ttl", float),  # the seed's own misspelling
    "MAX_SANDBOX_INSTANCES": ("SandboxApp", "max_sandboxes", int),
    "FILE_SYSTEM": ("SandboxApp", "storage", str.lower),
    "STORAGE_FOLDER": ("SandboxApp", "storage_folder", str),
    "ALLOW_MOUNT_DIR": ("SandboxApp", "allow_mount_dir", _bool),
    "OSS_ENDPOINT": ("OSSStorage", "endpoint", str),
    "OSS_ACCESS_KEY_ID": ("OSSStorage", "access_key_id", str),
    "OSS_ACCESS_KEY_SECRET": ("OSSStorage", "access_key_secret", str),
    "OSS_BUCKET_NAME": ("OSSStorage", "bucket_name", str),
    "REDIS_PORT_KEY": ("SandboxApp", "redis_port_key", str),
    "REDIS_CONTAINER_POOL_KEY": ("SandboxApp", "redis_pool_key", str),
    "RUNTIME_SANDBOX_REGISTRY": ("SandboxApp", "image_registry", str),
    "RUNTIME_SANDBOX_IMAGE_NAMESPACE": ("SandboxApp", "image_namespace", str),
    "RUNTIME_SANDBOX_IMAGE_TAG": ("SandboxApp", "image_tag", str),
    "K8S_NAMESPACE": ("KubernetesBackend", "namespace", str),
    "KUBECONFIG_PATH": ("KubernetesBackend", "kubeconfig", str),
}

# The seed's Redis settings, combined into SandboxApp.redis_url when REDIS_ENABLED is true.
REDIS_PARTS = {
    "REDIS_ENABLED", "REDIS_SERVER", "REDIS_PORT", "REDIS_DB", "REDIS_USER", "REDIS_PASSWORD",
}  # fmt: skip
# Accepted, understood, but served by later work: reported "not yet", never an error.
NOT_YET = {"HEARTBEAT_LOCK_TTL"}
# Passed to the process environment (the client timeout of SDKs run by this process).
ENVIRONMENT = {"RUNTIME_SANDBOX_TIMEOUT"}
# Cloud backends of the seed that this project does not offer.
UNSUPPORTED_PREFIXES = ("AGENT_RUN_", "FC_", "AGENTBAY_")


def parse(text: str, source: str = "env file") -> list[tuple[str, str, int]]:
    """(name, value, line number) for each assignment; quotes and comments removed."""
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            # The line itself is not echoed: it may hold a secret (a mistyped BEARER_TOKEN).
            raise EnvFileError(f"{source}:{number}: not a NAME=value line")
        name, value = match.groups()
        if value[:1] in ("'", '"'):
            quote = value[0]
            end = value.find(quote, 1)
            if end < 0:
                raise EnvFileError(f"{source}:{number}: unterminated quote in {name}")
            value = value[1:end]
        else:
            value = value.split(" #", 1)[0].strip()
        entries.append((name, value, number))
    return entries


def load(path: str) -> tuple[dict[str, dict[str, Any]], dict[str, str], list[str]]:
    """Read a seed `.env` file: (trait config by section, environment, notes to log)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise EnvFileError(f"cannot read env file {path}: {e.strerror}") from None
    config: dict[str, dict[str, Any]] = {}
    environment: dict[str, str] = {}
    notes: list[str] = []
    redis: dict[str, str] = {}
    for name, value, number in parse(text, path):
        where = f"{path}:{number}"
        if name in REDIS_PARTS:
            redis[name] = value
        elif name in MAPPING:
            section, trait, convert = MAPPING[name]
            try:
                config.setdefault(section, {})[trait] = convert(value)
            except (ValueError, TypeError) as e:
                raise EnvFileError(f"{where}: bad value for {name}: {e}") from None
        elif name in ENVIRONMENT:
            environment[name] = value
        elif name in NOT_YET:
            notes.append(f"{where}: {name} is understood but not supported yet; ignored")
        elif name.startswith(UNSUPPORTED_PREFIXES):
            notes.append(f"{where}: {name} belongs to a cloud backend this server does not offer")
        else:
            raise EnvFileError(
                f"{where}: unknown variable {name}; known: "
                + ", ".join(sorted([*MAPPING, *ENVIRONMENT, *NOT_YET, *REDIS_PARTS]))
            )
    try:
        if _bool(redis.get("REDIS_ENABLED", "false")):
            config.setdefault("SandboxApp", {})["redis_url"] = redis_url(redis)
    except ValueError as e:
        raise EnvFileError(f"{path}: bad Redis settings: {e}") from None
    return config, environment, notes


def redis_url(parts: dict[str, str]) -> str:
    """`redis://[user[:password]@]server:port/db` from the seed's REDIS_* values."""
    from urllib.parse import quote

    server = parts.get("REDIS_SERVER") or "localhost"
    port = int(parts.get("REDIS_PORT") or 6379)
    db = int(parts.get("REDIS_DB") or 0)
    user = quote(parts.get("REDIS_USER") or "", safe="")
    password = quote(parts.get("REDIS_PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"redis://{auth}{server}:{port}/{db}"
