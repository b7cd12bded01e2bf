from __future__ import annotations

import pytest

from serve_app.engines.llm.sentences import SentenceSplitter, clean_for_speech


def split(text: str, step: int = 1, **options) -> list[str]:
    """Feed ``text`` in deltas of ``step`` characters, then flush."""
    splitter = SentenceSplitter(**options)
    pieces: list[str] = []
    for i in range(0, len(text), step):
        pieces += splitter.push(text[i : i + step])
    return pieces + splitter.flush()


CASES = [
    # English sentence ends
    ("Hi! I'm Ava. How can I help?", ["Hi!", "I'm Ava.", "How can I help?"]),
    ("Really?! Yes... I think so; maybe.", ["Really?!", "Yes...", "I think so;", "maybe."]),
    ('He said "go home." Then he left.', ['He said "go home."', "Then he left."]),
    ("(This is an aside.) And this is not.", ["(This is an aside.)", "And this is not."]),
    # first clause early, only when a few words long, and only for the first piece
    (
        "That's a great question, and the answer is simple, really. Well, maybe not.",
        ["That's a great question,", "and the answer is simple, really.", "Well, maybe not."],
    ),
    ("Well, I think so. Sure.", ["Well, I think so.", "Sure."]),
    ("Here is the plan: we go now, then rest.", ["Here is the plan:", "we go now, then rest."]),
    # numbers, abbreviations, initials, ellipses are not sentence ends
    ("Pi is 3.14159 and e is 2.718. Nice.", ["Pi is 3.14159 and e is 2.718.", "Nice."]),
    (
        "Mr. Smith met Dr. Jones at 5 p.m. today. OK.",
        ["Mr. Smith met Dr. Jones at 5 p.m. today.", "OK."],
    ),
    ("The U.S. is big, e.g. Texas. Right.", ["The U.S. is big,", "e.g. Texas.", "Right."]),
    ("So, e.g. Texas. Right.", ["So, e.g. Texas.", "Right."]),
    ("J. K. Rowling wrote it. So did I. Yes.", ["J. K. Rowling wrote it.", "So did I.", "Yes."]),
    ("Count 1...10 slowly. Done.", ["Count 1...10 slowly.", "Done."]),
    ("It is 10:30 with 1,000 people. Go.", ["It is 10:30 with 1,000 people.", "Go."]),
    ("See example.com for more. Bye.", ["See example.com for more.", "Bye."]),
    ("Version 2. Then version 3.", ["Version 2.", "Then version 3."]),
    # Chinese
    ("你好！我是小助手。今天天气怎么样？", ["你好！", "我是小助手。", "今天天气怎么样？"]),
    ("当然可以，我来帮你，没问题。好的。", ["当然可以，", "我来帮你，没问题。", "好的。"]),
    ("好的，我知道了。", ["好的，我知道了。"]),
    ("第一；第二。", ["第一；", "第二。"]),
    ("他说：“你好。”然后走了。", ["他说：“你好。”", "然后走了。"]),
    ("圆周率是3.14。对吗？", ["圆周率是3.14。", "对吗？"]),
    ("我们用Python写代码.很简单!", ["我们用Python写代码.", "很简单!"]),
    ("嗯……让我想想。", ["嗯……", "让我想想。"]),
    # newlines and markdown
    ("First line\nSecond line\n\nThird", ["First line", "Second line", "Third"]),
    (
        "**Sure!** Here are the steps:\n1. Open the door.\n2. Walk in.\n- Done\n* Also done",
        ["Sure!", "Here are the steps:", "Open the door.", "Walk in.", "Done", "Also done"],
    ),
    (
        "## Summary\nUse `pip install` to __install__ it.",
        ["Summary", "Use pip install to install it."],
    ),
    ("> Quoted text here.\n• bullet point", ["Quoted text here.", "bullet point"]),
    ("Read [the docs](https://example.com/a.b) now. Thanks.", ["Read the docs now.", "Thanks."]),
    ("Run this:\n```python\nprint(1)\nx = 2.5\n```\nThat is all.", ["Run this:", "That is all."]),
    ("Keep snake_case names. Yes.", ["Keep snake_case names.", "Yes."]),
    # emojis and pieces with nothing to say
    ("Great job! 🎉🎉 See you soon 😀.", ["Great job!", "See you soon ."]),
    ("👍\n---\nOK.", ["OK."]),
    ("我很开心😊！你呢？", ["我很开心！", "你呢？"]),
    # no final punctuation
    ("No punctuation at all", ["No punctuation at all"]),
    ("", []),
]


@pytest.mark.parametrize("text,expected", CASES)
@pytest.mark.parametrize("step", [1, 3, 1000])
def test_splits(text, expected, step):
    assert split(text, step) == expected


def test_pieces_come_out_as_soon_as_they_are_complete():
    s = SentenceSplitter()
    assert s.push("Hello there") == []
    assert s.push(".") == []  # "there." could still become "there.com"
    assert s.push(" How") == ["Hello there."]
    assert s.push(" are you?") == []
    assert s.push(" Fine") == ["How are you?"]
    assert s.flush() == ["Fine"]


def test_decimal_split_across_deltas_waits():
    s = SentenceSplitter()
    assert s.push("It costs 3.") == []
    assert s.push("50 dollars. ") == ["It costs 3.50 dollars."]


def test_chinese_sentence_end_needs_no_space_after():
    s = SentenceSplitter()
    assert s.push("你好！") == []  # a closing quote may follow
    assert s.push("我是") == ["你好！"]
    assert s.push("小助手。」") == []
    assert s.push("对") == ["我是小助手。」"]


def test_first_clause_only_once_and_threshold_is_configurable():
    text = "Yes, of course, I can, and I will, gladly."
    assert split(text) == ["Yes, of course,", "I can, and I will, gladly."]
    assert split(text, first_clause_words=1) == ["Yes,", "of course, I can, and I will, gladly."]
    assert split(text, first_clause_words=50) == [text]


def test_clause_split_is_per_reply_after_flush():
    s = SentenceSplitter()
    assert s.push("That is a good one, sure. And this, also good. ") == [
        "That is a good one,", "sure.", "And this, also good."
    ]
    assert s.flush() == []
    assert s.push("This is a new reply, again. ") == ["This is a new reply,", "again."]


def test_long_runs_are_cut_on_a_space():
    text = " ".join(f"word{i}" for i in range(100))
    pieces = split(text, step=5, max_chars=60)
    assert " ".join(pieces) == text
    assert all(len(p) <= 60 for p in pieces)
    assert len(pieces) > 5


def test_long_runs_without_spaces_are_cut_hard():
    text = "中" * 450
    pieces = split(text, step=7, max_chars=200)
    assert "".join(pieces) == text
    assert [len(p) for p in pieces] == [200, 200, 50]


def test_invalid_options():
    with pytest.raises(ValueError):
        SentenceSplitter(first_clause_words=0)
    with pytest.raises(ValueError):
        SentenceSplitter(max_chars=5)


@pytest.mark.parametrize(
    "raw,clean",
    [
        ("**bold** and *italic* and `code`", "bold and italic and code"),
        ("### Heading", "Heading"),
        ("- item", "item"),
        ("12. item", "item"),
        ("C# and F# are languages", "C# and F# are languages"),
        ("5 - 3 = 2", "5 - 3 = 2"),
        ("  lots   of\n spaces ", "lots of spaces"),
        ("❤️ love ✨", "love"),
        ("👨‍👩‍👧", ""),
        ("***", ""),
        ("…", ""),
    ],
)
def test_clean_for_speech(raw, clean):
    assert clean_for_speech(raw) == clean


def test_list_marker_only_stripped_at_line_start():
    assert clean_for_speech("- item", at_line_start=False) == "- item"
