"""Inbound webhook triggers: one YAML file per trigger under deployments/triggers/, validated when loaded.

A trigger says how a request is verified (the scheme and where its secret or public key lives), which payloads
count (conditions on the JSON body) and what starts (a report, a deployment, or one of Bulletin's flows) with
parameters templated from the payload. Everything here is pure apart from reading the files: the API resolves
secrets, verifies, records and starts runs.

Templates follow bulletin.templating's one rule: a value that is exactly ``{{ payload.data.runId }}`` or
``{{ headers.x_github_event }}`` is replaced by that value, type kept. Header names are lower-cased with ``-``
turned into ``_``; headers that carry signatures or credentials are never offered to templates.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from bulletin.definitions import load_definition
from bulletin.errors import NotFoundError, RequestError
from bulletin.models import IDENTIFIER_RE, Format, Identifier
from bulletin.templating import TemplateError, is_template, render_value

Scheme = Literal["standard-webhooks", "dbt-cloud", "github", "jwt-es256"]
Operator = Literal["==", "!=", "in", "not_in", "exists"]
#: Flows a trigger may start by name without a deployment. The API maps each to its flow object.
FlowName = Literal["refresh"]

EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
#: Prefect block document names are slugs.
BlockName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,127}$")]
DeploymentName = Annotated[str, StringConstraints(pattern=r"^[^/\s]{1,200}/[^/\s]{1,200}$")]
PayloadPath = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_$@-]{1,100}(\.[A-Za-z0-9_$@-]{1,100}){0,15}$")]

#: The only template shape a trigger may use: a whole value naming something in the payload or the headers.
_TEMPLATE = re.compile(r"^\{\{\s*(?:payload|headers)(?:\.[A-Za-z_][A-Za-z0-9_]*)+\s*\}\}$")
#: Headers never offered to templates, so a signature or credential cannot end up in a flow run's parameters.
_PRIVATE_HEADER = re.compile(r"authorization|cookie|signature|token|secret", re.IGNORECASE)
#: Message ids usable in a run key as they are; with the longest trigger id the key stays within 200 characters.
_RUN_KEY_SAFE = re.compile(r"^[A-Za-z0-9_.:@+-]{1,64}$")
_SHOWN_MAX = 80


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Verification(_Strict):
    """How a request proves where it comes from. Secrets are named here, never written here."""

    scheme: Scheme
    secret_env: EnvName | None = Field(
        default=None,
        description="Environment variable holding the secret (standard-webhooks: several space-separated ones "
        "while a secret rotates).",
    )
    secret_block: BlockName | None = Field(default=None, description="Prefect Secret block holding the secret.")
    public_key_env: EnvName | None = Field(
        default=None, description="jwt-es256: environment variable holding one or more PEM public keys."
    )
    public_key_block: BlockName | None = Field(
        default=None, description="jwt-es256: Prefect Secret block holding one or more PEM public keys."
    )
    tolerance_seconds: int = Field(
        default=300, ge=1, le=3600, description="Allowed clock skew of a signed timestamp, either way."
    )
    max_age_seconds: int | None = Field(
        default=None,
        ge=1,
        le=7 * 86_400,
        description="dbt-cloud: oldest body `timestamp` accepted (default 3600); jwt-es256: oldest `iat` (default "
        "300).",
    )
    audience: str | None = Field(default=None, description="jwt-es256: required `aud`.")
    issuer: str | None = Field(default=None, description="jwt-es256: required `iss`.")

    @model_validator(mode="after")
    def _one_source(self) -> Verification:
        jwt = self.scheme == "jwt-es256"
        secrets = [n for n in ("secret_env", "secret_block") if getattr(self, n) is not None]
        keys = [n for n in ("public_key_env", "public_key_block") if getattr(self, n) is not None]
        wanted, other = (keys, secrets) if jwt else (secrets, keys)
        names = "'public_key_env' or 'public_key_block'" if jwt else "'secret_env' or 'secret_block'"
        if other:
            raise ValueError(f"{other[0]!r} does not apply to scheme {self.scheme!r}: give {names}")
        if len(wanted) != 1:
            raise ValueError(f"scheme {self.scheme!r} needs exactly one of {names}")
        if not jwt and (self.audience is not None or self.issuer is not None):
            raise ValueError("'audience' and 'issuer' apply only to scheme 'jwt-es256'")
        if self.max_age_seconds is not None and self.scheme not in {"dbt-cloud", "jwt-es256"}:
            raise ValueError("'max_age_seconds' applies only to 'dbt-cloud' and 'jwt-es256'")
        return self

    @property
    def max_age(self) -> int:
        """The effective maximum age: dbt Cloud retries for a while, JWTs are meant to be used at once."""
        if self.max_age_seconds is not None:
            return self.max_age_seconds
        return 3600 if self.scheme == "dbt-cloud" else 300


class Condition(_Strict):
    """One test on the payload: ``path op value``. A missing path fails every test except ``exists: false``."""

    path: PayloadPath
    op: Operator = "=="
    value: Any = None

    @model_validator(mode="after")
    def _value_fits(self) -> Condition:
        if self.op in {"in", "not_in"} and not isinstance(self.value, list):
            raise ValueError(f"op {self.op!r} needs a list value")
        if self.op == "exists" and not isinstance(self.value, bool | None):
            raise ValueError("op 'exists' takes true, false or no value")
        return self


class Action(_Strict):
    """What a matching request starts: exactly one of a report, a deployment or a named flow."""

    report: Identifier | None = None
    deployment: DeploymentName | None = None
    flow: FlowName | None = None
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Report parameters (for a report) or flow parameters; values may be whole-value templates.",
    )
    recipients: list[Identifier] | None = Field(default=None, description="report: only these recipient refs.")
    formats: list[Format] | None = Field(default=None, description="report: only these formats.")
    dry_run: bool = Field(default=False, description="report: render into a temporary folder, deliver nothing.")

    @model_validator(mode="after")
    def _one_target(self) -> Action:
        targets = [n for n in ("report", "deployment", "flow") if getattr(self, n) is not None]
        if len(targets) != 1:
            raise ValueError("give exactly one of 'report', 'deployment' or 'flow'")
        if self.report is None and (self.recipients is not None or self.formats is not None or self.dry_run):
            raise ValueError("'recipients', 'formats' and 'dry_run' apply only to a 'report' action")
        _check_templates(self.parameters, "parameters")
        return self


class Trigger(_Strict):
    #: At most 100 characters, so the replay store's source and the run keys built from it stay within bounds.
    id: Annotated[Identifier, StringConstraints(max_length=100)]
    description: str = ""
    verify: Verification
    conditions: list[Condition] = Field(default_factory=list)
    action: Action

    @property
    def source(self) -> str:
        """The replay store's namespace: message ids are unique per sender, not across senders."""
        return f"{self.id}:{self.verify.scheme}"


def _check_templates(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check_templates(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_templates(item, f"{where}.{index}")
    elif is_template(value) and not _TEMPLATE.match(str(value).strip()):
        raise ValueError(
            f"{where}: bad template {value!r}: use '{{{{ payload.<path> }}}}' or '{{{{ headers.<name> }}}}'"
        )


# --- loading ------------------------------------------------------------------------------------------------------


def load_trigger_file(path: Path) -> Trigger:
    """Load and validate one file; a DefinitionError names the path, the field and the reason."""
    return load_definition(path, Trigger)


def load_triggers(folder: Path) -> dict[str, Trigger]:
    """Every trigger in ``folder`` (``*.yaml``), or the first error found. A missing folder means no triggers."""
    return {t.id: t for t in (load_trigger_file(p) for p in sorted(folder.glob("*.yaml")))}


def missing_secret_env(trigger: Trigger, environ: Mapping[str, str]) -> str | None:
    """The environment variable a trigger reads its secret or public key from, when it is unset or blank in
    ``environ``; None when it is set or the trigger reads a Prefect Secret block instead."""
    name = trigger.verify.secret_env or trigger.verify.public_key_env
    return name if name is not None and not environ.get(name, "").strip() else None


def get_trigger(triggers: Mapping[str, Trigger], trigger_id: str) -> Trigger:
    """The trigger named ``trigger_id``, or NotFoundError (HTTP 404)."""
    trigger = triggers.get(trigger_id) if IDENTIFIER_RE.match(trigger_id) else None
    if trigger is None:
        raise NotFoundError(f"no trigger {trigger_id[:128]!r}", field="trigger_id")
    return trigger


# --- conditions and parameters --------------------------------------------------------------------------------------

_MISSING = object()


def _lookup(payload: Any, path: str) -> Any:
    current = payload
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 3] + "..."


def _equal(left: Any, right: Any) -> bool:
    # JSON true is not 1: without the type check, `value: 1` would match a boolean payload field in Python.
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return bool(left == right)


def _check(condition: Condition, payload: Any) -> str | None:
    """None when ``condition`` holds, else why not (values are truncated: they come from the sender)."""
    actual = _lookup(payload, condition.path)
    if condition.op == "exists":
        wanted = condition.value is not False
        if (actual is not _MISSING) == wanted:
            return None
        return f"{condition.path} is {'missing' if wanted else 'present'}"
    if actual is _MISSING:
        return f"{condition.path} is missing"
    if condition.op in {"==", "!="}:
        holds = _equal(actual, condition.value) == (condition.op == "==")
    else:
        holds = any(_equal(actual, v) for v in condition.value) == (condition.op == "in")
    if holds:
        return None
    return f"{condition.path} is {_shown(actual)}, not {condition.op} {_shown(condition.value)}"


def conditions_match(trigger: Trigger, payload: Any) -> tuple[bool, str]:
    """Whether every condition holds, with the reason: the first condition that fails, or that all matched."""
    for condition in trigger.conditions:
        reason = _check(condition, payload)
        if reason is not None:
            return False, reason
    return True, f"{len(trigger.conditions)} condition(s) matched"


def template_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers as templates see them: ``X-GitHub-Event`` as ``x_github_event``; credentials left out."""
    return {
        name.lower().replace("-", "_"): value for name, value in headers.items() if not _PRIVATE_HEADER.search(name)
    }


def _is_plain(value: Any) -> bool:
    scalar = (str, int, float, bool, type(None))
    return isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))


def _render(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {key: _render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, context) for item in value]
    result = render_value(value, context)
    # Only values, never objects, come from the payload: Prefect resolves a {"$ref": ...} in a flow's parameters
    # into a stored block, and a sender must not be able to make a run load one.
    if is_template(value) and not _is_plain(result):
        raise TemplateError(f"template {value!r} names an object: only a value or a list of values can be passed")
    return result


def action_parameters(trigger: Trigger, payload: Any, headers: Mapping[str, str]) -> dict[str, Any]:
    """The parameters of the flow run a matching request starts, templated from the payload and headers.

    For a report, they are ``deliver_report``'s (``report_id``, ``parameters``, ...); for a deployment or a flow,
    the action's parameters as they are. A template naming something the payload lacks is the sender's fault: a
    RequestError (HTTP 400).
    """
    action = trigger.action
    context = {"payload": payload, "headers": template_headers(headers)}
    try:
        rendered = _render(action.parameters, context)
    except TemplateError as exc:
        raise RequestError(f"trigger {trigger.id!r}: {exc}", field="body") from exc
    if action.report is None:
        return dict(rendered)
    params: dict[str, Any] = {"report_id": action.report, "parameters": rendered or None, "dry_run": action.dry_run}
    if action.recipients is not None:
        params["recipients"] = list(action.recipients)
    if action.formats is not None:
        params["formats"] = list(action.formats)
    return params


def webhook_run_key(trigger_id: str, message_id: str) -> str:
    """A ledger run key for a report started by a webhook: one message delivers once, even if the replay store
    is lost. Message ids outside the run-key alphabet are hashed."""
    safe = message_id if _RUN_KEY_SAFE.match(message_id) else hashlib.sha256(message_id.encode()).hexdigest()[:32]
    return f"hook:{trigger_id}:{safe}"
