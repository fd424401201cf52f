import pytest

from symtune.formats import FORMATS, FormatError, get_format, render_input, render_prompt


def test_at_least_ten_formats_render_prompt_and_completion():
    assert len(FORMATS) >= 10
    for fmt in FORMATS.values():
        prompt = render_prompt(fmt, [("good film", "positive"), ("dull", "negative")], "great", "Classify.")
        assert prompt.startswith("Classify.\n\n")
        assert prompt.count("\n\n") == 3
        assert not prompt.endswith(" ")  # the completion brings the space: " label"
        assert fmt.exemplar("great", "positive") == fmt.query("great") + " positive"


def test_paper_formats_present():
    shapes = {f.exemplar("x", "y") for f in FORMATS.values()}
    for s in ["Input: x\nOutput: y", "Input: x\nTarget: y", "Input: x\nSymbol: y", "Input: x\nLabel: y",
              "Question: x\nAnswer: y", "Student: x\nTeacher: y", "X = x\nY = y", "Q: x\nA: y", "x -> y",
              "Sentences: x\nMapped To: y"]:
        assert s in shapes


def test_multi_field_inputs_readable():
    row = {"premise": "It rained.", "hypothesis": "The ground is wet.", "sentence1": "a"}
    assert render_input(row, ["premise", "hypothesis"]) == "Premise: It rained.\nHypothesis: The ground is wet."
    assert render_input(row, ["sentence1"]) == "a"
    assert render_input(row, ["premise"], "{premise} Right?") == "It rained. Right?"


def test_unknown_format():
    with pytest.raises(FormatError, match="unknown format 'xml'"):
        get_format("xml")
