"""The Jinja2 sandbox that report email templates run in, and what those templates may name.

A report definition is data that users write, so its email templates (``email.subject``, ``email.text``,
``email.html``) run in Jinja2's sandbox with ``StrictUndefined``: a name the context lacks fails the render. The
environment lives here, in the core, so that ``bulletin reports validate`` compiles a template with exactly the
environment that ``tasks.email`` renders it with, and can refuse a name that would fail every recipient.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from jinja2 import StrictUndefined, Template, TemplateError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

TemplateKind = Literal["subject", "text", "html"]

#: The names ``tasks.email.render_bodies`` gives every template (a test there checks that the two agree).
CONTEXT_NAMES = frozenset(
    {
        "title",
        "description",
        "recipient",
        "key_figures",
        "files",
        "links",
        "generated",
        "generated_date",
        "period",
        "no_rows",
        "chart_title",
        "chart_cid",
        "chart_rows",
        "chart_alt",
    }
)
#: What ``recipient`` always has in a template, besides the recipient's attributes.
RECIPIENT_FIELDS = frozenset({"ref", "name", "email", "org"})


@lru_cache(maxsize=8)
def _environment(kind: TemplateKind) -> SandboxedEnvironment:
    # Only HTML is autoescaped: escaping the text body or the subject would show "&amp;" to the reader.
    return SandboxedEnvironment(
        autoescape=kind == "html",
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=kind != "subject",
    )


@lru_cache(maxsize=64)
def compile_template(kind: TemplateKind, source: str) -> Template:
    """The compiled template; ``jinja2.TemplateError`` when it does not parse."""
    return _environment(kind).from_string(source)


def _is_recipient(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "recipient"


def _recipient_names(tree: nodes.Template) -> list[str]:
    """The attributes a template reads from ``recipient``: ``recipient.x`` and ``recipient["x"]``."""
    found: list[str] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if not (isinstance(node, nodes.Getattr | nodes.Getitem) and _is_recipient(node.node)):
            continue
        if isinstance(node, nodes.Getattr):
            if not hasattr(dict, node.attr):  # recipient.get("x") is a method call, not an attribute
                found.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            found.append(node.arg.value)
    return list(dict.fromkeys(found))


def template_problems(kind: TemplateKind, source: str, attributes: frozenset[str]) -> list[str]:
    """Why ``source`` would fail every render, given the recipients' ``attributes``; empty when it would not.

    It must compile in the sandbox, name only what the context provides, and read from ``recipient`` only its
    fields and the ``attributes`` every recipient of the audience has.
    """
    env = _environment(kind)
    try:
        compile_template(kind, source)
        tree = env.parse(source)
    except TemplateError as exc:
        return [f"does not compile: {exc.message or exc}"]
    problems = [
        f"names {name!r}, which email templates do not have (they have {', '.join(sorted(CONTEXT_NAMES))})"
        for name in sorted(meta.find_undeclared_variables(tree) - CONTEXT_NAMES)
    ]
    known = RECIPIENT_FIELDS | attributes
    problems += [
        f"names recipient.{name}, which the audience does not provide (it provides {', '.join(sorted(known))})"
        for name in _recipient_names(tree)
        if name not in known
    ]
    return problems
