"""Render a ``run:`` script so that template values stay data, never code (docs/design.md §12).

Pasting a value into a shell script lets the value run: ``$(id)``, a
backtick, a quote that closes the script's own quotes, a newline. So a
``${{ variables.NAME }}`` (or ``${{ secrets.NAME }}``) in a script is never
replaced by its value but by a reference to an environment variable that
holds it (``SHUNTER_VAR_NAME``, ``SHUNTER_SECRET_NAME``), written for the
quoting context the reference sits in, so the shell prints it literally
whatever it holds:

=====================  ===========================  =============================
where                  written as                   e.g.
=====================  ===========================  =============================
unquoted, backticks    ``"${SHUNTER_VAR_X}"``       ``echo ${{ variables.X }}``
double quotes          ``${SHUNTER_VAR_X}``         ``echo "x=${{ variables.X }}"``
single quotes          ``'"${SHUNTER_VAR_X}"'``     ``echo 'x=${{ variables.X }}'``
``$'...'``             ``'"${SHUNTER_VAR_X}"$'``
here-document          ``${SHUNTER_VAR_X}``         ``cat <<EOF``
=====================  ===========================  =============================

Unquoted, the quotes keep the shell from splitting the value into words and
expanding ``*``; inside double quotes an expansion is already literal. A
parameter expansion's result is never parsed again as shell code, so even a
context this small lexer misjudged could at worst split a value, never run
it. A reference inside a quoted here-document (``<<'EOF'``), where nothing
expands, is refused (:func:`script_problems` says so at registration).

``ci.*`` values (ids of letters, digits, ``.``, ``_``, ``-``) are pasted as
they are: they hold nothing a shell would act on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..model.templates import TemplateError, render

__all__ = ["env_name", "render_script", "script_problems"]

_EXPR = re.compile(r"\$\{\{(.*?)\}\}")
_REF = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\s*")
_HEREDOC = re.compile(r"<<(-?)[ \t]*(?:'([^'\n]*)'|\"([^\"\n]*)\"|\\?([A-Za-z0-9_.-]+))")
_ENV_PREFIX = {"variables": "SHUNTER_VAR_", "secrets": "SHUNTER_SECRET_"}
_WORD_START = frozenset(" \t\n;&|()")

# Quoting contexts of the lexer.
UNQUOTED, DOUBLE, SINGLE, ANSI, BACKTICK, PARAM, COMMENT, HEREDOC, QUOTED_HEREDOC = range(9)


def env_name(namespace: str, name: str) -> str:
    """The environment variable a reference to ``namespace.name`` reads (``SHUNTER_VAR_X``)."""
    return _ENV_PREFIX[namespace] + name


def render_script(script: str, context: Mapping[str, Mapping[str, str]]) -> tuple[str, dict[str, str]]:
    """The script with every reference written as in the module docstring, and the variables it reads.

    ``context`` maps namespaces (``ci``, ``variables``, ``secrets``) to
    values. Returns ``(script, env)``: ``env`` holds ``SHUNTER_VAR_X`` /
    ``SHUNTER_SECRET_X`` for each reference, to add to the step's
    environment. Raises ``TemplateError`` for an unknown reference or one in
    a quoted here-document.
    """
    if "${{" not in script:
        return script, {}
    env: dict[str, str] = {}
    pieces: list[str] = []
    done = 0
    for match, mode in _references(script):
        ref = _REF.fullmatch(match.group(1))
        pieces.append(script[done:match.start()])
        done = match.end()
        if ref is None or ref.group(1) not in _ENV_PREFIX:
            # ci.* (and anything malformed, which render reports) as plain text.
            pieces.append(render(match.group(0), context))
            continue
        namespace, name = ref.groups()
        values = context.get(namespace)
        if values is None or name not in values:
            raise TemplateError(f"unknown reference {namespace}.{name} in {match.group(0)!r}")
        if mode == QUOTED_HEREDOC:
            raise TemplateError(_QUOTED_HEREDOC.format(text=match.group(0)))
        variable = env_name(namespace, name)
        env[variable] = str(values[name])
        pieces.append(_written(variable, mode))
    pieces.append(script[done:])
    rendered = "".join(pieces)
    # What render() would refuse in the rest (an unclosed `${{`) is refused here too.
    render(_EXPR.sub("", script), {})
    return rendered, env


def script_problems(script: str) -> list[str]:
    """Problems with where references sit in ``script`` (for registration): quoted here-documents."""
    if "${{" not in script:
        return []
    problems = []
    for match, mode in _references(script):
        ref = _REF.fullmatch(match.group(1))
        if mode == QUOTED_HEREDOC and ref is not None and ref.group(1) in _ENV_PREFIX:
            problems.append(_QUOTED_HEREDOC.format(text=match.group(0)))
    return problems


_QUOTED_HEREDOC = ("{text} is inside a quoted here-document (<<'EOF'), where nothing expands; "
                   "use an unquoted delimiter (<<EOF) to have its value there")  # fmt: skip


def _written(variable: str, mode: int) -> str:
    if mode in (DOUBLE, HEREDOC):
        return f"${{{variable}}}"
    if mode == SINGLE:
        return f"'\"${{{variable}}}\"'"
    if mode == ANSI:
        return f"'\"${{{variable}}}\"$'"
    return f'"${{{variable}}}"'


def _references(script: str) -> list[tuple[re.Match[str], int]]:
    """Each ``${{ ... }}`` of the script with the quoting context it sits in."""
    matches = list(_EXPR.finditer(script))
    found: list[tuple[re.Match[str], int]] = []
    lexer = _Lexer(script)
    for match in matches:
        mode = lexer.advance_to(match.start())
        found.append((match, mode))
        lexer.skip_to(match.end())
    return found


class _Lexer:
    """Just enough of bash's quoting rules to know the context at a position.

    A stack of frames: ``[mode, depth]`` where depth counts the parentheses
    or braces opened inside a ``$(`` or ``${`` frame.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.stack: list[list[int]] = [[UNQUOTED, 0]]
        self.heredocs: list[tuple[str, bool, bool]] = []  # (delimiter, quoted, strip tabs)
        self.body_end = -1  # inside a here-document body until this offset
        self.body_quoted = False

    def mode(self) -> int:
        if self.pos < self.body_end:
            return QUOTED_HEREDOC if self.body_quoted else HEREDOC
        for mode, _ in reversed(self.stack):
            if mode != PARAM:
                return mode
        return UNQUOTED

    def skip_to(self, end: int) -> None:
        self.pos = max(self.pos, end)

    def advance_to(self, target: int) -> int:
        while self.pos < target:
            self._step()
        return self.mode()

    def _step(self) -> None:
        text, pos = self.text, self.pos
        if pos < self.body_end:
            self.pos = self.body_end
            return
        ch = text[pos]
        nxt = text[pos + 1] if pos + 1 < len(text) else ""
        frame = self.stack[-1]
        mode = frame[0]
        self.pos = pos + 1
        if mode == COMMENT:
            if ch == "\n":
                self.stack.pop()
                self._newline()
        elif mode == SINGLE:
            if ch == "'":
                self.stack.pop()
        elif mode == ANSI:
            if ch == "\\":
                self.pos += 1
            elif ch == "'":
                self.stack.pop()
        elif mode == DOUBLE:
            if ch == "\\":
                self.pos += 1
            elif ch == '"':
                self.stack.pop()
            else:
                self._expansion(ch, nxt)
        else:  # UNQUOTED, BACKTICK, PARAM
            self._unquoted(ch, nxt, frame)

    def _unquoted(self, ch: str, nxt: str, frame: list[int]) -> None:
        mode = frame[0]
        if ch == "\\":
            self.pos += 1
        elif ch == "'":
            self.stack.append([SINGLE, 0])
        elif ch == '"':
            self.stack.append([DOUBLE, 0])
        elif ch == "`" and mode == BACKTICK:
            self.stack.pop()
        elif ch == "#" and mode == UNQUOTED and (self.pos == 1 or self.text[self.pos - 2] in _WORD_START):
            self.stack.append([COMMENT, 0])
        elif ch == "$" and nxt == "'":
            self.pos += 1
            self.stack.append([ANSI, 0])
        elif self._expansion(ch, nxt):
            pass
        elif (ch == "(" and mode == UNQUOTED) or (ch == "{" and mode == PARAM):
            frame[1] += 1
        elif ch == ")" and mode == UNQUOTED:
            if frame[1] == 0 and len(self.stack) > 1:
                self.stack.pop()  # the end of a $( ... )
            else:
                frame[1] = max(0, frame[1] - 1)
        elif ch == "}" and mode == PARAM:
            if frame[1] == 0:
                self.stack.pop()
            else:
                frame[1] -= 1
        elif ch == "<" and nxt == "<" and mode == UNQUOTED:
            self._heredoc_operator()
        elif ch == "\n":
            self._newline()

    def _expansion(self, ch: str, nxt: str) -> bool:
        """``$(``, ``${`` and backticks open a frame (in unquoted and double-quoted text)."""
        if ch == "$" and nxt == "(":
            self.pos += 1
            self.stack.append([UNQUOTED, 0])
            return True
        if ch == "$" and nxt == "{":
            self.pos += 1
            self.stack.append([PARAM, 0])
            return True
        if ch == "`":
            self.stack.append([BACKTICK, 0])
            return True
        return False

    def _heredoc_operator(self) -> None:
        text = self.text
        start = self.pos - 1  # at the first '<'
        if text.startswith("<<<", start):
            self.pos = start + 3  # a here-string, not a here-document
            return
        match = _HEREDOC.match(text, start)
        if match is None:
            self.pos = start + 2
            return
        quoted = match.group(2) is not None or match.group(3) is not None or match.group(0).find("\\") != -1
        delimiter = next(group for group in match.groups()[1:] if group is not None)
        self.heredocs.append((delimiter, quoted, match.group(1) == "-"))
        self.pos = match.end()

    def _newline(self) -> None:
        """At the end of a line, the bodies of the here-documents it opened begin."""
        if not self.heredocs:
            return
        text = self.text
        start = self.pos
        quoted_any = False
        for delimiter, quoted, strip in self.heredocs:
            position = start
            while position < len(text):
                end = text.find("\n", position)
                end = len(text) if end == -1 else end
                line = text[position:end]
                if (line.lstrip("\t") if strip else line) == delimiter:
                    start = min(len(text), end + 1)
                    break
                position = end + 1
            else:
                start = len(text)
            quoted_any = quoted_any or quoted
        self.heredocs.clear()
        self.body_end = start
        self.body_quoted = quoted_any
