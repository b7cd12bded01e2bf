"""Cut a streamed LLM reply into speakable pieces, as early as each one is complete.

TTS wants whole sentences (prosody), the listener wants the first sound soon: so every piece
ends at a sentence end, except that the first piece of a reply may end at a clause break (a
comma or colon) once it is a few words long. Markdown and emojis, which TTS would read out or
choke on, are stripped. English and Chinese punctuation are both understood.
"""
from __future__ import annotations

import re

# Ends a sentence wherever it stands (Chinese text has no spaces after punctuation).
_CJK_ENDS = "。！？；"
# Ends a sentence only when followed by whitespace or a CJK character: "3.14", "e.g.x",
# "1...10" and "a.b" stay whole.
_ASCII_ENDS = ".!?;…"
_CJK_CLAUSES = "，、："
_ASCII_CLAUSES = ",:"
# Closing quotes, brackets and markdown stay with the punctuation before them: 'He said
# "hi."', "**Sure!**"
_CLOSERS = "\"')]}”’」』）】》*_`~"
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_WORDS = re.compile(r"[^\W_]+(?:'[^\W_]+)?")

# Words that end in a period without ending the sentence ("Mr. Smith", "e.g. this").
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "fig", "cf", "al",
    "approx", "dept", "lt", "sgt", "capt",
}
# "U.S", "e.g", and initials like the "J" of "J. K. Rowling" (not "I", which ends sentences)
_INITIALS = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]|[A-HJ-Z]")

_CODE_FENCE = re.compile(r"\s*(```|~~~)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_LINE_MARKUP = re.compile(r"^\s*(?:#{1,6}\s+|>\s*|[-*+•]\s+|\d{1,3}[.)]\s+)+")
_INLINE_MARKUP = re.compile(r"\*+|`+|~~|(?<![^\W_])_+|_+(?![^\W_])|^#+\s*")
_EMOJI = re.compile(
    "[\U0001f000-\U0001faff\U00002600-\U000027bf\U00002b00-\U00002bff\ufe0f\u200d\u20e3]"
)
_SPACES = re.compile(r"\s+")


def clean_for_speech(text: str, at_line_start: bool = True) -> str:
    """``text`` without markdown markup and emojis, whitespace collapsed; "" if nothing is
    left worth saying (no letter, digit or CJK character)."""
    text = _LINK.sub(r"\1", text)
    if at_line_start:
        text = _LINE_MARKUP.sub("", text)
    text = _EMOJI.sub("", _INLINE_MARKUP.sub("", text))
    text = _SPACES.sub(" ", text).strip()
    return text if _WORDS.search(text) else ""


def _weight(text: str) -> int:
    """Roughly the syllables in ``text``: Latin words plus CJK characters."""
    return len(_WORDS.findall(_CJK.sub(" ", text))) + len(_CJK.findall(text))


class SentenceSplitter:
    """Stateful splitter for one reply at a time: ``push`` each delta, ``flush`` at the end.

    ``first_clause_words``: the first piece may end at a comma or colon once it holds this
    many words (CJK characters count one each). ``max_chars``: a run this long without a
    sentence end is cut at its last space (or hard, for text without spaces).
    """

    def __init__(self, first_clause_words: int = 3, max_chars: int = 200) -> None:
        if first_clause_words < 1 or max_chars < 10:
            raise ValueError("first_clause_words must be >= 1 and max_chars >= 10")
        self.first_clause_words = first_clause_words
        self.max_chars = max_chars
        self._reset()

    def _reset(self) -> None:
        self._buf = ""
        self._started = False  # a piece of this reply has been returned
        self._line_start = True  # the buffer begins a line
        self._in_code = False  # inside a fenced code block, which is not read out

    def push(self, delta: str) -> list[str]:
        """Add a delta; return the pieces it completed (often none)."""
        self._buf += delta
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of reply: return what is left, and get ready for the next reply."""
        pieces = self._drain(final=True)
        rest = self._take(len(self._buf))
        self._reset()
        return pieces + rest

    def _drain(self, final: bool) -> list[str]:
        pieces: list[str] = []
        while True:
            end = self._boundary(final)
            if end is None and len(self._buf) > self.max_chars:
                end = self._cut_point()
            if end is None:
                return pieces
            pieces += self._take(end)

    def _take(self, end: int) -> list[str]:
        raw, self._buf = self._buf[:end], self._buf[end:]
        lead = raw[: len(raw) - len(raw.lstrip())]
        at_line_start = self._line_start or "\n" in lead
        self._line_start = raw.endswith("\n") or (self._line_start and not raw.strip())
        if at_line_start and _CODE_FENCE.match(raw):
            self._in_code = not self._in_code
            return []
        piece = "" if self._in_code else clean_for_speech(raw, at_line_start)
        if not piece:
            return []
        self._started = True
        return [piece]

    def _boundary(self, final: bool) -> int | None:
        """Where the first complete piece in the buffer ends, or None if none is complete.

        Returns None at punctuation whose meaning depends on text not yet received ("3." may
        become "3.14"), unless ``final``.
        """
        buf = self._buf
        i = 0
        while i < len(buf):
            c = buf[i]
            if c == "\n":
                if buf[:i].strip():
                    return i + 1
            elif c in _CJK_ENDS or c in _ASCII_ENDS or (
                not self._started and (c in _CJK_CLAUSES or c in _ASCII_CLAUSES)
            ):
                j = i + 1
                while j < len(buf) and (buf[j] in _CLOSERS or buf[j] in _ASCII_ENDS + _CJK_ENDS):
                    j += 1
                if j == len(buf) and not final:
                    return None  # a closing quote, or "14" of "3.14", may follow
                if c in _ASCII_ENDS or c in _ASCII_CLAUSES:
                    followed = j == len(buf) or buf[j].isspace() or bool(_CJK.match(buf[j]))
                    if followed and not (c == "." and self._period_in_word(i)):
                        if c in _ASCII_ENDS or self._clause_long_enough(j):
                            return j
                elif c in _CJK_ENDS or self._clause_long_enough(j):
                    return j
                i = j
                continue
            i += 1
        return len(buf) if final and buf.strip() else None

    def _clause_long_enough(self, end: int) -> bool:
        return _weight(self._buf[:end]) >= self.first_clause_words

    def _period_in_word(self, i: int) -> bool:
        """Whether the period at ``i`` belongs to an abbreviation or a list number."""
        before = self._buf[:i]
        word = re.search(r"[\w.]*$", before).group()
        if word.lower() in _ABBREVIATIONS or _INITIALS.fullmatch(word):
            return True
        if word.isdigit():  # "1. First step" at the start of a line is a list marker
            line = before[: len(before) - len(word)]
            nl = line.rfind("\n")
            if nl >= 0 or self._line_start:
                return not line[nl + 1 :].strip(" \t*>")
        return False

    def _cut_point(self) -> int:
        space = self._buf.rfind(" ", 0, self.max_chars + 1)
        return space + 1 if space > self.max_chars // 2 else self.max_chars
