"""``deploy/pipeline.env.example`` and ``docs/reference.md``, generated from the settings
themselves so they cannot drift (the README once documented two settings that never existed).

    python -m orchestrator.envexample > deploy/pipeline.env.example
    python -m orchestrator.envexample --markdown > docs/reference.md

Every field of :class:`orchestrator.settings.Settings` is listed with what it means, its
bounds and its default; the Markdown ends with the job parameters
(:class:`orchestrator.jobs.params.Parameters`: job files, ``pipeline submit`` options, the API).
A setting's meaning is its Field's description in settings.py, the one place: a unit test
(tests/unit/test_deploy_files.py) fails when a setting is missing from the file or has none.
"""

from __future__ import annotations

import typing
from pathlib import Path

from pydantic.fields import FieldInfo

from orchestrator.jobs import params
from orchestrator.settings import Settings

#: Sections, by the first setting of each (in the order settings.py declares them).
SECTIONS: dict[str, str] = {
    "share_dir": "Share and servers (the same on every host)",
    "broker_polling_interval": "Watcher and workers",
    "portfolio_size": "Job defaults (a job file or `pipeline submit` options override them)",
    "max_gap_days": "Validation of price files",
    "step_registry": "Steps (orchestrator/steps/registry.py), time limits, retries, recovery",
    "retention_days": "Storage rotation",
    "auth": "Access tokens for the CLI",
    "security_key": "Signed task messages, TLS, secrets from files (deploy/README.md)",
    "log_format": "Monitoring: logs, Flower, notifications, health",
}

#: Values set (not commented out) in the example: what a multi-host installation changes.
DEPLOY_VALUES: dict[str, str] = {
    "share_dir": "/srv/pipeline/share",
    "var_dir": "/var/lib/pipeline",
}

HEADER = """\
# Pipeline Orchestrator: every setting, as environment variables.
#
# Generated from orchestrator/settings.py by
#     python -m orchestrator.envexample > deploy/pipeline.env.example
# Do not edit by hand: change the setting's description in settings.py and regenerate.
#
# Copy to /etc/pipeline/pipeline.env (systemd: EnvironmentFile=) or deploy/pipeline.env
# (compose: env_file:). The same file serves every role on every host; what differs per role
# (its signing key) is set in the unit or the compose service. Lines starting with '#' show
# the default; uncomment to change it. Secrets: never here. Put them in files; the compose
# file and the systemd units point the *_FILE settings at them (compose: /run/secrets/NAME,
# systemd: LoadCredential= and %d/NAME), and a value set here would override the units'.
"""


def describe(name: str, field: FieldInfo) -> str:
    """What the setting means: its Field's description in settings.py; '' when it has none."""
    return field.description or ""


def render() -> str:
    lines = [HEADER]
    for name, field in Settings.model_fields.items():
        if name in SECTIONS:
            lines.append(f"\n# ==== {SECTIONS[name]}\n")
        variable = f"PIPELINE_{name.upper()}"
        lines.append(f"# {variable}: {describe(name, field)}.")
        allowed = _allowed(field)
        if allowed:
            lines.append(f"#   {allowed}")
        default = _default(field)
        if name in DEPLOY_VALUES:
            lines.append(f"#   default: {default or 'unset'}")
            lines.append(f"{variable}={DEPLOY_VALUES[name]}")
        elif default:
            lines.append(f"#{variable}={default}")
        else:
            lines.append(f"#   default: unset\n#{variable}=")
    return "\n".join(lines) + "\n"


MARKDOWN_HEADER = """\
# Settings reference

Generated from `orchestrator/settings.py` by
`python -m orchestrator.envexample --markdown > docs/reference.md`; do not edit by hand.

One settings object, read from `PIPELINE_*` environment variables (or `PIPELINE_<NAME>_FILE` for
the secrets that have one), validated at start: a bad value stops the process with one line per
problem and exit code 3, e.g.
`PIPELINE_PORTFOLIO_SIZE='500': Input should be less than or equal to 100`. A `PIPELINE_*`
variable that names no setting is reported as a warning (a typo would otherwise be ignored in
silence). `celeryconfig.py`, the CLI, the watcher and the workers all read this one object.
The same list, as an environment file to copy: `deploy/pipeline.env.example`.
"""


def render_markdown() -> str:
    """The settings as Markdown tables, one per section."""
    lines = [MARKDOWN_HEADER]
    for name, field in Settings.model_fields.items():
        if name in SECTIONS:
            lines += ["", f"## {SECTIONS[name]}", "",
                      "| variable | default | values | meaning |", "|---|---|---|---|"]
        cells = [f"`PIPELINE_{name.upper()}`", f"`{_default(field)}`" if _default(field) else
                 "unset", _allowed(field), describe(name, field)]
        lines.append(_row(cells))
    return "\n".join([*lines, *_parameters_markdown()]) + "\n"


PARAMETERS_HEADER = """\
## Job parameters

What one job asks for: a field of a job file (`{"input_file": "prices.csv", "portfolio_size":
30}`), an option of `pipeline submit` (`--portfolio-size 30`), a field of `POST /v1/jobs` and
`POST /v1/batches`. Declared once, in `orchestrator/jobs/params.py`; a value out of its bounds is
refused in the same words by each of them. A default that names a setting comes from it."""


def _parameters_markdown() -> list[str]:
    lines = ["", PARAMETERS_HEADER, "", "| parameter | `pipeline submit` | default | values | "
             "meaning |", "|---|---|---|---|---|"]
    for name, field in params.Parameters.model_fields.items():
        default = f"`{_default(field)}`" if _default(field) else "none"
        if name in params.SETTING_OF:
            default += f" (`PIPELINE_{params.SETTING_OF[name].upper()}`)"
        options = ", ".join(f"`{o}`" for o in params.option_names(name))
        lines.append(_row([f"`{name}`", options, default, _allowed(field) or "text",
                           field.description or ""]))
    return lines


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _default(field: FieldInfo) -> str:
    value = field.default
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _allowed(field: FieldInfo) -> str:
    """The values the setting takes: choices, bounds, pattern."""
    choices = _choices(field.annotation)
    if choices:
        return "one of: " + ", ".join(choices)
    parts = []
    for item in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="),
                           ("min_length", "length >="), ("pattern", "matches")):
            bound = getattr(item, attr, None)
            if bound is not None:
                parts.append(f"{sign} {bound}")
    kind = _kind(field.annotation)
    return f"{kind}{' ' + ', '.join(parts) if parts else ''}" if kind else ", ".join(parts)


def _choices(annotation: object) -> list[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a).replace("\t", "\\t") for a in typing.get_args(annotation)]
    return []


def _kind(annotation: object) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    names = {int: "integer", float: "number", bool: "true or false", Path: "path"}
    first = args[0]
    if getattr(first, "__name__", "") == "SecretStr":
        return "secret text"
    return names.get(first, "")  # type: ignore[call-overload]


if __name__ == "__main__":
    import sys

    print(render_markdown() if "--markdown" in sys.argv[1:] else render(), end="")
