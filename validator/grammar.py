"""The stdout line grammar: one place that both prints and parses protocol lines.

    [START] task=<task_name> env=<benchmark> model=<model_name>
    [STEP] step=<n> action=<action_str> reward=<0.00> done=<true|false> error=<msg|null>
    [END] success=<true|false> steps=<n> score=<score> rewards=<r1,r2,...,rn>

Free text (``action=``, ``error=``) may hold anything but a line break. ``format()``
writes every character on which ``str.splitlines`` breaks (and NUL) as a visible escape
(see ``ESCAPES``), so a printed line is always one line; parsing then yields the escaped
text. A free-text field that would itself contain a whole `` reward=<r> done=<b> error=``
sequence gets the space before ``reward=`` written as ``\\x20``, so every printed
``[STEP]`` line has exactly one way to be read.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

#: Characters that would split a line (``str.splitlines``) or are NUL, and their escapes.
ESCAPES: dict[str, str] = {
    "\n": "\\n",
    "\r": "\\r",
    "\x0b": "\\v",
    "\x0c": "\\f",
    "\x1c": "\\x1c",
    "\x1d": "\\x1d",
    "\x1e": "\\x1e",
    "\x85": "\\x85",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
    "\x00": "\\x00",
}
_ESCAPE_TABLE = str.maketrans(ESCAPES)

# Field rules, written in the regex subset that Python's ``re`` and ECMA-262 (JSON Schema
# ``pattern``) read the same way: no ``\s``, ``\d``, ``.`` or named groups, so
# ``schemas/line.schema.json`` can be generated from these strings (see ``validator.schema``).

#: Every character ``str.isspace()`` accepts (Python's ``\s``), spelled out.
WHITESPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: The characters on which ``str.splitlines`` breaks a line, as a character-class body.
LINE_BREAK_CLASS = r"\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029"
#: The same characters, plus NUL: none of them may appear inside a printed line.
FORBIDDEN_CHARS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00"

DECIMAL2 = r"-?(?:0|[1-9][0-9]*)\.[0-9][0-9]"
INTEGER = r"(?:0|[1-9][0-9]*)"
BOOL = r"(?:true|false)"
NAME = rf"[^{WHITESPACE}\x00]+"
TEXT_CHAR = rf"[^{LINE_BREAK_CLASS}\x00]"
TEXT = rf"{TEXT_CHAR}*"
#: ``error=``: ``null`` or a message; non-empty, and the line may not end in whitespace.
MESSAGE = rf"{TEXT}[^{WHITESPACE}\x00]"
#: ``score=``: a decimal in [0, 1], any number of decimals, no sign, no exponent.
SCORE = r"(?:0(?:\.[0-9]+)?|1(?:\.0+)?)"
REWARDS = rf"(?:{DECIMAL2}(?:,{DECIMAL2})*)?"

#: The fields of each line kind, in order, with the pattern each value must match.
#: ``END_NOSCORE`` is the older published ``[END]`` line without ``score=``.
FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "START": (("task", NAME), ("env", NAME), ("model", NAME)),
    "STEP": (
        ("step", INTEGER), ("action", TEXT), ("reward", DECIMAL2), ("done", BOOL),
        ("error", MESSAGE),
    ),
    "END": (("success", BOOL), ("steps", INTEGER), ("score", SCORE), ("rewards", REWARDS)),
    "END_NOSCORE": (("success", BOOL), ("steps", INTEGER), ("rewards", REWARDS)),
}
TAGS = {"START": "[START]", "STEP": "[STEP]", "END": "[END]", "END_NOSCORE": "[END]"}

_SEPARATOR = rf" reward=({DECIMAL2}) done=({BOOL}) error="
#: The separator after ``action=``: ``[STEP]`` lines are parsed from the right of it.
STEP_SEPARATOR = re.compile(_SEPARATOR)


def count_separators(text: str, start: int = 0, up_to: int | None = None) -> int:
    """Return how many ``STEP_SEPARATOR``s ``text`` holds from ``start`` (stopping at
    ``up_to``), keeping none of them: a 20 MB line of separators holds 666,666."""
    count = 0
    for count, _ in enumerate(STEP_SEPARATOR.finditer(text, start), 1):
        if count == up_to:
            break
    return count


def _plain(pattern: str) -> str:
    """Return ``pattern`` with its capturing groups made non-capturing."""
    return re.sub(r"(?<!\\)\((?!\?)", "(?:", pattern)


def _no_separator(char: str) -> str:
    # One character that does not start a separator: free text may not contain one,
    # or the line could be read two ways.
    return rf"(?:(?!{_plain(_SEPARATOR)}){char})"


def _end_pattern(kind: str) -> str:
    # steps=0 only when rewards= is empty: a lookahead keeps it one pattern.
    after_steps = " score=" + SCORE + " rewards=" if kind == "END" else " rewards="
    parts = [r"\[END\] success=(" + BOOL + ")", " steps=(0(?=" + after_steps + "$)|[1-9][0-9]*)"]
    if kind == "END":
        parts.append(" score=(" + SCORE + ")")
    parts.append(" rewards=(" + REWARDS + ")")
    return "".join(parts)


#: The full-line patterns (without anchors): the single definition of a valid line.
#: A ``[STEP]`` line holds exactly one separator, so it has exactly one reading.
PATTERNS: dict[str, str] = {
    "START": rf"\[START\] task=({NAME}) env=({NAME}) model=({NAME})",
    "STEP": (
        rf"\[STEP\] step=({INTEGER}) action=({_no_separator(TEXT_CHAR)}*){_SEPARATOR}"
        rf"({_no_separator(TEXT_CHAR)}*[^{WHITESPACE}\x00])"
    ),
    "END": _end_pattern("END"),
    "END_NOSCORE": _end_pattern("END_NOSCORE"),
}

START_RE = re.compile(PATTERNS["START"])
STEP_RE = re.compile(PATTERNS["STEP"])
END_RE = re.compile(PATTERNS["END"])
END_NOSCORE_RE = re.compile(PATTERNS["END_NOSCORE"])

#: The same ``[STEP]`` line, read greedily from the right: it matches every valid line and
#: also ambiguous ones (more than one separator), which ``STEP_SEPARATOR`` counts tell apart.
#: Free text is ``[^\n]`` here: callers use it only on text already free of
#: ``FORBIDDEN_CHARS`` (it is the streaming checker's fast path).
STEP_GREEDY_RE = re.compile(
    rf"\[STEP\] step=({INTEGER}) action=([^\n]*){_SEPARATOR}([^\n]*[^{WHITESPACE}\x00])"
)
#: The streaming checker's fast path works on the log's bytes, so it spells the same rules
#: for bytes: a name or a message must end in a visible ASCII character there (one ending in
#: a non-ASCII character is rare and takes the per-line path, which decodes it).
_VISIBLE_ASCII = r"[^\t-\r\x1c-\x20\x00\x80-\xff]"


def _bytes_pattern(pattern: str) -> re.Pattern[bytes]:
    return re.compile(pattern.encode("ascii"))


#: The end of a ``[STEP]`` line with ``done=false`` and the head of the next ``[STEP]`` line,
#: ``(reward, next step)``. The step is any digits here (cheaper to match than ``INTEGER``):
#: the checker compares it with the expected number, written without leading zeros. Used only on lines free of ``FORBIDDEN_CHARS`` that each hold
#: ``" reward="`` once, so each line has one reading and the regex engine skips the action
#: text with a literal search instead of stepping through it.
STEP_TAILS_BYTES = _bytes_pattern(
    rf" reward=({DECIMAL2}) done=false error=[^\n]*{_VISIBLE_ASCII}\n"
    rf"\[STEP\] step=([0-9]+) action="
)
#: The end of the last ``[STEP]`` line of such a run: ``(reward, done)``.
STEP_TAIL_BYTES = _bytes_pattern(
    rf" reward=({DECIMAL2}) done=({BOOL}) error=[^\n]*{_VISIBLE_ASCII}\n"
)
START_BYTES = _bytes_pattern(
    rf"\[START\] task={_VISIBLE_ASCII}+ env={_VISIBLE_ASCII}+ model={_VISIBLE_ASCII}+\n"
)
#: The fast path's ``[END]`` line, ``(steps, score, rewards)`` (no score for END_NOSCORE).
#: The steps are any digits and the rewards any of ``-.,0-9`` here: the checker requires
#: them to equal the [STEP] lines' count and rewards, which makes the line valid.
END_BYTES = {
    "END": _bytes_pattern(
        rf"\[END\] success={BOOL} steps=([0-9]+) score=({SCORE}) rewards=([-.,0-9]*)\n"),
    "END_NOSCORE": _bytes_pattern(rf"\[END\] success={BOOL} steps=([0-9]+) rewards=([-.,0-9]*)\n"),
}


class GrammarError(ValueError):
    """A line that is not a valid protocol line; ``col`` is 1-based."""

    def __init__(self, message: str, col: int = 1):
        super().__init__(message)
        self.message = message
        self.col = col


def escape(text: str) -> str:
    """Return ``text`` with line breaks and NUL written as visible escapes."""
    return text.translate(_ESCAPE_TABLE)


def _escape_free_text(text: str) -> str:
    text = escape(text)
    if STEP_SEPARATOR.search(text):
        text = STEP_SEPARATOR.sub(lambda m: "\\x20" + m.group(0)[1:], text)
    return text


class LongNumber(int):
    """A step/steps number too long for ``int()`` (over 4,300 digits): equal to no count, and
    shown by its length, since it cannot be printed either."""

    digits: int

    def __new__(cls, digits: int) -> LongNumber:  # noqa: PYI034
        number = super().__new__(cls, 10**INT_DIGITS)
        number.digits = digits
        return number

    def __str__(self) -> str:
        return f"a number of {self.digits:,} digits"

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return str(self)

    def __add__(self, other: object) -> LongNumber:  # the step after it is as long
        return self

    __radd__ = __sub__ = __add__


INT_DIGITS = 4300  # what int() converts by default (sys.get_int_max_str_digits)


def integer(digits: str) -> int:
    """Return the value of a step/steps number, however many digits it has."""
    return int(digits) if len(digits) <= INT_DIGITS else LongNumber(len(digits))


def format_reward(value: float) -> str:
    """Return a reward as the grammar writes it: exactly two decimals."""
    return f"{value:.2f}"


_MODELS = ("StartLine", "StepLine", "EndLine", "ProtocolLine")


def __getattr__(name: str):
    # The pydantic models are built on first use: the streaming checker needs only the
    # patterns above, and importing pydantic would double its start-up time.
    if name in _MODELS:
        _define_models()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _define_models() -> None:
    global _Line, StartLine, StepLine, EndLine, ProtocolLine, _PARSERS
    if "_PARSERS" in globals():
        return
    from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

    class _Line(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")


    class StartLine(_Line):
        """``[START] task=... env=... model=...``"""

        kind: Literal["START"] = "START"
        task: str
        env: str
        model: str

        @field_validator("task", "env", "model")
        @classmethod
        def _name(cls, value: str) -> str:
            value = escape(value)
            if not re.fullmatch(NAME, value):
                raise ValueError(f"must be non-empty and contain no spaces, got {value!r}")
            return value

        def format(self) -> str:
            """Return the line, without a trailing newline."""
            return f"[START] task={self.task} env={self.env} model={self.model}"

        @classmethod
        def parse(cls, line: str) -> StartLine:
            """Parse one line (no newline) or raise ``GrammarError``."""
            m = START_RE.fullmatch(line)
            if not m:
                raise GrammarError("not a valid [START] line")
            return cls.model_construct(task=m[1], env=m[2], model=m[3])


    class StepLine(_Line):
        """``[STEP] step=<n> action=<text> reward=<0.00> done=<bool> error=<text|null>``"""

        kind: Literal["STEP"] = "STEP"
        step: int = Field(ge=0)
        action: str
        reward: float
        done: bool
        error: str | None = None

        @field_validator("action")
        @classmethod
        def _action(cls, value: str) -> str:
            return _escape_free_text(value)

        @field_validator("error")
        @classmethod
        def _error(cls, value: str | None) -> str | None:
            # The grammar cannot tell an empty message or the text "null" from no error,
            # and trailing spaces would end the line with whitespace.
            if value is None:
                return None
            value = _escape_free_text(value).strip()
            return None if value in ("", "null") else value

        @field_validator("reward")
        @classmethod
        def _reward(cls, value: float) -> float:
            if not math.isfinite(value):
                raise ValueError(f"reward must be finite, got {value!r}")
            return float(format_reward(value))

        def format(self) -> str:
            """Return the line, without a trailing newline."""
            return (
                f"[STEP] step={self.step} action={self.action} reward={format_reward(self.reward)}"
                f" done={'true' if self.done else 'false'} error={self.error or 'null'}"
            )

        @classmethod
        def parse(cls, line: str) -> StepLine:
            """Parse one line (no newline) or raise ``GrammarError``; ambiguous lines are errors."""
            m = STEP_RE.fullmatch(line)
            if not m:
                greedy = STEP_GREEDY_RE.fullmatch(line)
                if greedy and count_separators(line, up_to=2) > 1:
                    raise GrammarError(
                        "ambiguous [STEP] line: 'reward=... done=... error=' occurs more than once",
                        col=greedy.start(2) + 1,
                    )
                raise GrammarError("not a valid [STEP] line")
            error = m[5]
            return cls.model_construct(
                step=integer(m[1]),
                action=m[2],
                reward=float(m[3]),
                done=m[4] == "true",
                error=None if error == "null" else error,
            )


    class EndLine(_Line):
        """``[END] success=<bool> steps=<n> score=<score> rewards=<r1,...,rn>``"""

        kind: Literal["END"] = "END"
        success: bool
        steps: int = Field(ge=0)
        score: float = Field(ge=0.0, le=1.0)
        rewards: list[float] = Field(default_factory=list)

        @field_validator("score")
        @classmethod
        def _score(cls, value: float) -> float:
            if not math.isfinite(value):
                raise ValueError(f"score must be finite, got {value!r}")
            return round(value, 3) + 0.0  # no "-0.000"

        @field_validator("rewards")
        @classmethod
        def _rewards(cls, value: list[float]) -> list[float]:
            if not all(math.isfinite(r) for r in value):
                raise ValueError("rewards must be finite")
            return [float(format_reward(r)) for r in value]

        @model_validator(mode="after")
        def _no_rewards_without_steps(self) -> EndLine:
            if self.steps == 0 and self.rewards:
                raise ValueError("rewards must be empty when steps=0")
            return self

        def format(self) -> str:
            """Return the line, without a trailing newline."""
            rewards = ",".join(format_reward(r) for r in self.rewards)
            return (
                f"[END] success={'true' if self.success else 'false'} steps={self.steps}"
                f" score={self.score:.3f} rewards={rewards}"
            )

        @classmethod
        def parse(cls, line: str) -> EndLine:
            """Parse one line (no newline) or raise ``GrammarError``."""
            m = END_RE.fullmatch(line)
            if not m:
                raise GrammarError("not a valid [END] line")
            score = float(m[3])
            return cls.model_construct(
                success=m[1] == "true",
                steps=integer(m[2]),
                score=score,
                rewards=[float(r) for r in m[4].split(",")] if m[4] else [],
            )


    ProtocolLine = Annotated[StartLine | StepLine | EndLine, Field(discriminator="kind")]

    _PARSERS = {"[START]": StartLine.parse, "[STEP]": StepLine.parse, "[END]": EndLine.parse}


def parse(line: str) -> StartLine | StepLine | EndLine:
    """Parse any protocol line (without its newline) or raise ``GrammarError``."""
    _define_models()
    tag = line.split(" ", 1)[0]
    parser = _PARSERS.get(tag)
    if parser is None:
        raise GrammarError("not a protocol line ([START], [STEP] or [END])")
    return parser(line)
