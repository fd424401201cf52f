"""Input-label formats and prompt rendering.

A prompt is: [instruction "\\n\\n"] exemplar "\\n\\n" exemplar ... "\\n\\n" query. An exemplar is the
format's input part, its joiner, and its output prefix followed by " " and the label; the query stops
right after the output prefix, so the completion is " " + label (leading space included, which is how
the label is tokenised after the prompt).

A chat prompt (`ChatTemplate`, opt-in) is the same episode as a conversation in the model's own chat template,
as lm-evaluation-harness's `--apply_chat_template --fewshot_as_multiturn` sends it: each exemplar a user turn
(its input in the format, up to the output prefix) and an assistant turn (its label), the query a last user
turn, then the template's generation prompt; the completion is the label alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    name: str
    input_prefix: str  # text before the input, e.g. "Input: "
    output_prefix: str  # text before the label, e.g. "Output:"
    joiner: str = "\n"  # between input and output prefix

    def exemplar(self, x: str, y: str) -> str:
        return f"{self.input_prefix}{x}{self.joiner}{self.output_prefix} {y}"

    def query(self, x: str) -> str:
        return f"{self.input_prefix}{x}{self.joiner}{self.output_prefix}"


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("input_output", "Input: ", "Output:"),
        Format("input_target", "Input: ", "Target:"),
        Format("input_symbol", "Input: ", "Symbol:"),
        Format("input_label", "Input: ", "Label:"),
        Format("question_answer", "Question: ", "Answer:"),
        Format("student_teacher", "Student: ", "Teacher:"),
        Format("x_y", "X = ", "Y ="),
        Format("q_a", "Q: ", "A:"),
        Format("arrow", "", "->", joiner=" "),
        Format("sentences_mapped", "Sentences: ", "Mapped To:"),
    )
}
DEFAULT_EVAL_FORMAT = "input_output"
EXEMPLAR_SEPARATOR = "\n\n"
PROMPT_FORMATS = ("plain", "chat")  # plain: the paper's text prompts; chat: the model's chat template
STOP = ["\n"]  # where a greedy answer ends in a plain prompt (a chat prompt also stops at its end of turn)


class FormatError(ValueError):
    """Unknown format name."""


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise FormatError(f"unknown format {name!r}; choose from {', '.join(FORMATS)}") from None


def field_title(field: str) -> str:
    """"sentence1" -> "Sentence 1", "paper_title" -> "Paper title"."""
    text = field.replace("_", " ")
    if text[-1:].isdigit() and not text[-2:-1].isspace():
        text = text.rstrip("0123456789") + " " + text[len(text.rstrip("0123456789")) :]
    return text[:1].upper() + text[1:]


def render_input(row: Mapping[str, str], fields: Sequence[str], template: str | None = None) -> str:
    """One input as text: the task's template if it has one; a single field as is; several fields
    one per line, each named ("Premise: ...\\nHypothesis: ...")."""
    if template is not None:
        return template.format(**{f: row[f] for f in fields})
    if len(fields) == 1:
        return row[fields[0]]
    return "\n".join(f"{field_title(f)}: {row[f]}" for f in fields)


def render_prompt(
    fmt: Format,
    exemplars: Sequence[tuple[str, str]],
    query: str,
    instruction: str | None = None,
) -> str:
    """The prompt text for (input, label) exemplars and a query input; the completion is " " + label."""
    parts = [fmt.exemplar(x, y) for x, y in exemplars]
    parts.append(fmt.query(query))
    body = EXEMPLAR_SEPARATOR.join(parts)
    return f"{instruction}{EXEMPLAR_SEPARATOR}{body}" if instruction else body


def chat_messages(
    fmt: Format,
    exemplars: Sequence[tuple[str, str]],
    query: str,
    instruction: str | None = None,
) -> list[dict[str, str]]:
    """The episode as turns: a user turn (the input, up to the output prefix) and an assistant turn (the label)
    per exemplar, the query a last user turn; the instruction opens the first user turn."""
    turns = []
    for x, y in exemplars:
        turns += [{"role": "user", "content": fmt.query(x)}, {"role": "assistant", "content": y}]
    turns.append({"role": "user", "content": fmt.query(query)})
    if instruction:
        turns[0]["content"] = f"{instruction}{EXEMPLAR_SEPARATOR}{turns[0]['content']}"
    return turns


class ChatTemplate:
    """A tokenizer's chat template, rendering episodes as conversations that end with the assistant's turn
    opened. `end_of_turn`: what closes an assistant turn (greedy answers stop there as well as at a newline)."""

    def __init__(self, tokenizer, model: str):
        if not getattr(tokenizer, "chat_template", None):
            raise FormatError(f"model {model!r} has no chat template (its tokenizer defines none); "
                              "use --prompt-format plain")
        self.tokenizer = tokenizer
        # The backend puts the tokenizer's own start-of-text token (if it adds one) before every prompt: a
        # template that writes it as text too would double it.
        bos = tokenizer.bos_token
        adds_bos = bos is not None and tokenizer("a").input_ids[:1] == [tokenizer.bos_token_id]
        self._drop = bos if adds_bos else ""
        reply = "symtune-reply"
        closed = self._apply([{"role": "user", "content": "x"}, {"role": "assistant", "content": reply}], False)
        self.end_of_turn = closed.rsplit(reply, 1)[-1].strip() or tokenizer.eos_token

    def _apply(self, turns: list[dict[str, str]], generation_prompt: bool) -> str:
        text = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)
        return text[len(self._drop):] if self._drop and text.startswith(self._drop) else text

    def render(self, fmt: Format, exemplars: Sequence[tuple[str, str]], query: str,
               instruction: str | None = None) -> str:
        """The prompt text; the completion is the label, with no leading space."""
        return self._apply(chat_messages(fmt, exemplars, query, instruction), True)
