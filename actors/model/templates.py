"""``${{ namespace.name }}`` templates in pipeline fields (docs/design.md §4).

Three namespaces exist:

- ``ci``: ``${{ ci.pipeline_id }}``, ``${{ ci.build_id }}``,
  ``${{ ci.build_num }}``, filled in by the runtime for each build;
- ``variables``: ``${{ variables.NAME }}``, the pipeline's declared
  variables (with the values a build was submitted with);
- ``secrets``: ``${{ secrets.NAME }}``, values of the server's
  configuration, only in ``env``, ``with`` and ``run`` (never in names that
  are shown, like a group), substituted by the agent alone.

In ``run:`` scripts references are not pasted but made environment
variables (``actors.execution.script``), so values stay data.

Whitespace inside the braces is optional (``${{ci.build_id}}`` works). There
is no escaping and no expression language: a template is literal text with
references in it. ``check`` finds every problem at registration time, so
``render`` on a validated field only fails if the context lacks a value.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping

__all__ = [
    "CI_KEYS",
    "NAMESPACES",
    "TemplateError",
    "render",
    "references",
    "check",
]

CI_KEYS: tuple[str, ...] = ("pipeline_id", "build_id", "build_num")
"""The names the ``ci`` namespace provides."""

NAMESPACES: tuple[str, ...] = ("ci", "variables", "secrets")
"""The namespaces a template may reference."""

_OPEN = "${{"
# One expression: `${{`, anything on one line up to the first `}}`, `}}`.
_EXPR = re.compile(r"\$\{\{(.*?)\}\}")
# What a well-formed expression holds: `namespace.name`, optional blanks.
_REF = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\s*")


class TemplateError(ValueError):
    """A template cannot be rendered; the message names the bad reference."""


def render(template: str, context: Mapping[str, Mapping[str, str]]) -> str:
    """Replace every ``${{ ns.name }}`` in ``template`` with ``context[ns][name]``.

    ``context`` is e.g. ``{"ci": {"build_id": "b1", ...}, "variables": {...}}``.
    Values that are not strings are converted with ``str``. Raises
    ``TemplateError`` for a reference the context does not hold or a
    malformed expression. A string without ``${{`` is returned as is.
    """
    if _OPEN not in template:
        return template

    def substitute(match: re.Match[str]) -> str:
        ref = _REF.fullmatch(match.group(1))
        if ref is None:
            raise TemplateError(f"malformed expression {match.group(0)!r}")
        namespace, name = ref.groups()
        values = context.get(namespace)
        if values is None:
            raise TemplateError(f"unknown namespace {namespace!r} in {match.group(0)!r}")
        try:
            value = values[name]
        except KeyError:
            raise TemplateError(
                f"unknown reference {namespace}.{name} in {match.group(0)!r}"
            ) from None
        return value if isinstance(value, str) else str(value)

    rendered = _EXPR.sub(substitute, template)
    if _OPEN in rendered and _unclosed(template):
        raise TemplateError(f"'${{{{' not closed by '}}}}' in {template!r}")
    return rendered


def references(template: str) -> list[tuple[str, str]]:
    """Return the well-formed references of ``template`` as (namespace, name), in order."""
    if _OPEN not in template:
        return []
    found = []
    for match in _EXPR.finditer(template):
        ref = _REF.fullmatch(match.group(1))
        if ref is not None:
            found.append((ref.group(1), ref.group(2)))
    return found


def check(template: str, variables: Collection[str], secrets: Collection[str] | None = None) -> list[str]:
    """Return a message for every problem in ``template``; empty if it is valid.

    Problems: an unknown namespace, a ``ci`` name that does not exist, a
    variable not in ``variables`` (the declared names), a secret not in
    ``secrets`` (None: no secret may be used here), an expression that
    is not ``namespace.name``, and a ``${{`` never closed by ``}}``. Where
    a close name exists the message suggests it.
    """
    if _OPEN not in template:
        return []
    problems = []
    for match in _EXPR.finditer(template):
        text = match.group(0)
        ref = _REF.fullmatch(match.group(1))
        if ref is None:
            problems.append(
                f"malformed expression {text!r} "
                "(expected '${{ ci.NAME }}' or '${{ variables.NAME }}')"
            )
            continue
        namespace, name = ref.groups()
        if namespace == "ci":
            if name not in CI_KEYS:
                problems.append(
                    f"unknown name 'ci.{name}' in {text!r}"
                    + _hint(name, CI_KEYS, "ci provides " + ", ".join(CI_KEYS))
                )
        elif namespace == "variables":
            if name not in variables:
                problems.append(
                    f"undeclared variable {name!r} in {text!r}"
                    + _hint(name, variables, "declare it under 'variables'")
                )
        elif namespace == "secrets":
            if secrets is None:
                problems.append(f"{text!r}: secrets may be used only in env, with and run")
            elif name not in secrets:
                problems.append(
                    f"unknown secret {name!r} in {text!r}"
                    + _hint(name, secrets, "the server's configuration declares its secrets under 'secrets'")
                )
        else:
            problems.append(
                f"unknown namespace {namespace!r} in {text!r}"
                + _hint(namespace, NAMESPACES, "use 'ci', 'variables' or 'secrets'")
            )
    for offset in _unclosed(template):
        problems.append(f"'${{{{' at offset {offset} is not closed by '}}}}'")
    return problems


def _unclosed(template: str) -> list[int]:
    """Offsets of ``${{`` that start no expression and lie inside none."""
    spans = [match.span() for match in _EXPR.finditer(template)]
    offsets = []
    start = template.find(_OPEN)
    index = 0
    while start != -1:
        while index < len(spans) and spans[index][1] <= start:
            index += 1
        if index == len(spans) or start < spans[index][0]:
            offsets.append(start)
        start = template.find(_OPEN, start + 1)
    return offsets


def _hint(word: str, candidates: Collection[str], otherwise: str) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, else `` (otherwise)``."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" ({otherwise})"
