"""A pure-Python equivalent of pycocoevalcap's PTBTokenizer (no Java).

pycocoevalcap runs ``edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase``
from Stanford CoreNLP 3.4.1 on every caption and then drops the tokens in
:data:`PUNCTUATIONS`. This module reproduces that pipeline with one regular-expression
scanner per line, following the 3.4.1 lexer's rules as observed on its output:

- brackets become ``-LRB- -RRB- -LCB- -RCB- -LSB- -RSB-`` and, because of ``-lowerCase``,
  end up as ``-lrb-`` ... which are *not* in the punctuation list, so they stay (exactly as
  in pycocoevalcap);
- ``"`` / curly quotes become `````/``''`` (opening when followed by a letter or digit);
  ``'`` is a quote unless it starts a contraction (``'s 'm 'd 're 've 'll``, ``n't``) or
  sits inside an apostrophe word (``o'clock``, ``ma'am``, ``'90s``, ``'em``, ``rock 'n' roll``);
- ``don't -> do n't``, ``can't -> ca n't``, ``cannot -> can not``, ``gonna -> gon na``,
  ``'tis -> 't is``; ``y'all -> y' all``;
- numbers keep ``.`` ``,`` ``:`` ``/`` inside (``3.5``, ``1,000``, ``10:30``, ``1/2``),
  a leading ``+``/``-`` sign binds to a number after a non-space (``2+2`` -> ``2 +2``);
- hyphenated words stay whole (``e-mail``, ``3-year-old``), dashes and ``--`` become ``--``,
  ``...``/``…``/``. . .`` become ``...``;
- known abbreviations (``mr. dr. vs. etc. st.``) and acronyms (``u.s.a.``) keep their period;
- currency: ``€ -> $``, ``£ -> #``, ``¢ -> cents``; fractions ``½ -> 1/2``;
- characters the lexer cannot tokenize (emoji and other astral-plane symbols, a few
  hyphen code points) are deleted, as CoreNLP does; soft hyphens are removed and
  zero-width spaces split tokens.

Known boundary (documented and tested): CoreNLP's lexer has many rare rules (phone
numbers, SGML, smileys, swear-word masking, exotic abbreviations) that are not
reproduced; on such inputs the raw token streams may differ. Caption text of the kind
found in COCO/Flickr, with the punctuation, numbers, hyphens, contractions, quotes and
accented letters listed above, matches token for token.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Mapping

# exactly pycocoevalcap's list (note: upper-case bracket names, so -lrb- etc. survive)
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                          ".", "?", "!", ",", ":", "-", "--", "...", ";"])

# abbreviations that keep their period (CoreNLP 3.4.1 ABBREV1/ABBREV2, lower-cased)
_ABBREV1 = {
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    "mon", "tue", "tues", "wed", "thu", "thurs", "fri", "ala", "ariz", "az", "ark", "calif", "colo",
    "conn", "ct", "dak", "del", "fla", "ga", "ill", "ind", "kan", "kans", "ky", "la", "mass", "md", "mich",
    "minn", "miss", "mo", "mont", "neb", "nev", "okla", "ore", "pa", "penn", "tenn", "tex", "va", "vt",
    "wash", "wis", "wisc", "wyo", "inc", "co", "cos", "corp", "pty", "ptys", "ltd", "plc", "rt", "bancorp",
    "bhd", "assn", "tel", "est", "ext", "sq", "jr", "bros", "ph.d", "ed.d", "esq", "etc", "al", "seq",
    "bldg",
}
_ABBREV2 = {
    "mr", "mrs", "ms", "miss", "dr", "drs", "prof", "profs", "sen", "sens", "rep", "reps", "atty", "attys",
    "lt", "col", "gen", "messrs", "gov", "govs", "adm", "rev", "maj", "sgt", "cpl", "pvt", "capt", "st",
    "ste", "ave", "pres", "lieut", "hon", "brig", "cmdr", "comdr", "pfc", "spc", "supt", "supts", "det",
    "mt", "ft", "adj", "adv", "asst", "assoc", "ens", "insp", "mlle", "mme", "msgr", "sfc", "vs", "v",
    "alex", "wm", "jos", "cie", "a.k.a", "cf", "treas", "ph", "invt", "elec", "natl", "mfg", "mtg", "dept",
    "blvd", "rd",
}

_CURRENCY = {"€": "$", "£": "#", "¢": "cents", "\u00a5": "\u00a5", "\u20a0": "$"}
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "{": "-LCB-", "}": "-RCB-", "[": "-LSB-", "]": "-RSB-"}
_UNTOKENIZABLE = {"\u2010", "\u2011", "\u2012"}
_ZERO_WIDTH = {"\u200b", "\ufeff"}



def _mark_class() -> str:
    ranges: list[list[int]] = []
    for o in range(0x300, 0x10000):
        if unicodedata.category(chr(o)).startswith("M"):
            if ranges and ranges[-1][1] == o - 1:
                ranges[-1][1] = o
            else:
                ranges.append([o, o])
    return "".join(f"\\u{a:04x}-\\u{b:04x}" if a != b else f"\\u{a:04x}" for a, b in ranges)


_M = _mark_class()
_L = rf"(?:[^\W\d_]|[{_M}])"  # a letter (with combining marks)
_A = rf"(?:[^\W_]|[{_M}])"  # letter or digit

_REDAUX = re.compile(r"(?i)'(?:s|m|d|re|ve|ll)(?![^\W\d_])")
# an apostrophe word kept whole (subset of CoreNLP APOWORD)
_APOWORD = re.compile(
    r"(?i)(?:'n'?(?=[^\W\d_])|'n'|(?:'em|'til|'till|'[2-9]0s|'cause|c'mon|ma'am|o'clock"
    rf"|[a-hj-xzn]'{_L}{{2}}{_L}*"
    rf"|{_L}+[aeiouy]'[aeiou]{_L}*)(?!{_A}))"
)
_ASSIM = {"gonna": ("gon", "na"), "gotta": ("got", "ta"), "wanna": ("wan", "na"), "lemme": ("lem", "me"),
          "gimme": ("gim", "me"), "cannot": ("can", "not")}

_SCAN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<url>(?:https?|ftp)://[^\s"<>|(){}\[\]]*[^\s"'<>|.!?(){},;:&\[\]-]|www\.[^\s"<>|()]+[^\s"<>|.!?(){},-])
  | (?P<email>[A-Za-z0-9][^\s"<>|(){}]*@[^\s"<>|(){}.]+(?:\.[^\s"<>|(){}.]+)*[^\s"<>|(){}]*)
  | (?P<sgml></?[A-Za-z!?][^>\n]*>)
  | (?P<amp>&amp;)
  | (?P<sdots>\.(?:[ \u00a0]\.)+)
  | (?P<ldots>\.\.\.+|\u2026|\u0085)
  | (?P<dash>--+|[\u2013\u2014\u2015])
  | (?P<dquote>"|``|''|[\u201c\u201d\u201e\u201f\u00ab\u00bb])
  | (?P<squote>[`\u2018\u2019\u201a\u201b\u2039\u203a])
  | (?P<bracket>[(){}\[\]])
  | (?P<number>(?:(?<=[^\s])[+\-])?\d+(?:[.,:/]\d+)*|(?<![^\s])\.\d+)
  | (?P<smiley>[<>]?[:;=][\-o*']?[()DPdpO\\{@|\[\]](?![^\W_]))
  | (?P<prog>c\+\+|[cf]\#)
  | (?P<twitter>@[A-Za-z_][A-Za-z_0-9]*|\#[^\W\d_][^\W_]*)
  | (?P<word>{A}+(?:(?:[-\u00ad/]|(?<=[^\W\d_])\.(?=[^\W\d_])){A}+)*)
  | (?P<apos>')
  | (?P<multi>[?!]+)
  | (?P<punct>.)
    """.replace("{A}", _A),
    re.X,
)


def _quote_dir(line: str, end: int) -> bool:
    """True (opening) when the quote is followed by a letter or digit."""
    return end < len(line) and (line[end].isalnum())


def _clean(line: str) -> str:
    if line.isascii():  # nothing to delete, normalise or split in plain ASCII
        return line
    out = []
    for ch in line:
        if ch in _UNTOKENIZABLE or ch == "\u00ad":
            continue
        if ch in _FRACTIONS:
            out.append(_FRACTIONS[ch])
            continue
        if ch in _ZERO_WIDTH:
            out.append(" ")
            continue
        o = ord(ch)
        if o > 0xFFFF:
            cat = unicodedata.category(ch)
            if not (cat.startswith("L") or cat.startswith("N") or cat.startswith("M")):
                continue
            if cat in ("Nd",) or unicodedata.name(ch, "").startswith("MATHEMATICAL"):
                continue
        out.append(ch)
    return "".join(out)


def ptb_tokenize_line(line: str, lower: bool = True, follow: str = "", looks_past_end: list | None = None) -> list[str]:
    """Tokens of one line as CoreNLP 3.4.1's PTBTokenizer (``-lowerCase``) prints them.

    ``follow`` is the start of the next line: like CoreNLP, a sentence-final ``.`` after an
    abbreviation depends on whether a capitalised word follows (it is removed later anyway).
    When ``looks_past_end`` is a list, something is appended to it whenever a kept token
    depends on what follows the line (a line-final ``x.`` or ``No.``).
    """
    line = _clean(line).replace("\u2019", "'")
    toks: list[str] = []
    i, n = 0, len(line)
    while i < n:
        # apostrophe forms first: contractions and apostrophe words
        if line[i] == "'":  # (curly apostrophes were made straight above)
            m = _REDAUX.match(line, i) if i > 0 and not line[i - 1].isspace() else None
            if m is not None:
                toks.append(m.group(0))
                i = m.end()
                continue
            m = _APOWORD.match(line, i)
            if m is not None:
                txt = m.group(0)
                toks.append(txt)
                i = m.end()
                continue
            low = line[i:i + 5].lower()
            if low.startswith("'tis") or low.startswith("'twas"):
                toks.append(line[i:i + 2])
                i += 2
                continue
            prev_space = i == 0 or line[i - 1].isspace() or line[i - 1] in "([{"
            nxt = line[i + 1] if i + 1 < n else ""
            if nxt == "'":
                toks.append("''")
                i += 2
                continue
            if prev_space and nxt.isalnum():
                toks.append("`")
            else:
                toks.append("'")
            i += 1
            continue
        m = _SCAN.match(line, i)
        assert m is not None
        if m.lastgroup == "number":  # longest match between a number and a word (3rd, 3-year-old)
            w = _WORD.match(line, i)
            if w is not None and w.end() > m.end():
                m = w
        kind = m.lastgroup
        txt = m.group(0)
        j = m.end()
        if kind == "space":
            pass
        elif kind in ("url", "email", "sgml", "prog", "twitter"):
            toks.append(txt)
        elif kind == "amp":
            toks.append("&")
        elif kind in ("sdots", "ldots"):
            toks.append("...")
        elif kind == "dash":
            toks.append("--")
        elif kind == "dquote":
            if txt in ("\u201c", "\u201e", "\u00ab", "``"):
                toks.append("``")
            elif txt in ("\u201d", "\u201f", "\u00bb", "''"):
                toks.append("''")
            else:
                toks.append("``" if _quote_dir(line, j) else "''")
        elif kind == "squote":
            if txt in ("`", "\u2018", "\u201b", "\u2039"):
                toks.append("`")
            else:
                toks.append("'")
        elif kind == "bracket":
            toks.append(_BRACKETS[txt])
        elif kind == "number":
            # a decimal then a period at the end of the number: "0.5." -> "0.5" "."
            toks.append(txt)
        elif kind == "word":
            a = _APOWORD.match(line, i) if txt[0].isalpha() else None
            if a is not None and a.end() > j:
                toks.append(a.group(0))
                j = a.end()
            else:
                j = _word(line, i, txt, toks, follow, looks_past_end)
        elif kind == "smiley":
            toks.append("".join(_BRACKETS.get(c, c) for c in txt))
        elif kind == "multi":
            toks.append(txt)
        elif kind == "apos":
            toks.append("'")
        else:
            toks.append(_CURRENCY.get(txt, txt))  # fractions were spelled out by _clean; \u00a0 is a space
        i = j
    if lower:
        toks = [t.lower() for t in toks]
    return toks


_WORD = re.compile(r"(?P<word>" + _A + r"+(?:(?:[-\u00ad/]|(?<=[^\W\d_])\.(?=[^\W\d_]))" + _A + r"+)*)")
_ACRO = re.compile(r"[A-Za-z](?:\.[A-Za-z])+")


_ABBREV3 = {"no", "nos"}
_NUM_AFTER = re.compile(r"[ \u00a0]+\d")
_ACRO_SENTEND = re.compile(
    r"\s+(?:About|According|Additionally|After|An|A|As|At|But|Earlier|He|Her|Here|However|If|In|It|Last|Many"
    r"|More|Mr\.|Ms\.|Now|Once|One|Other|Our|She|Since|So|Some|Such|That|The|Then|There|These|They|This|We"
    r"|When|While|What|Yet|You)[ \t\u00a0]"
)
_SENTEND = re.compile(r"\s+[A-Z][a-z]")


def _word(line: str, start: int, txt: str, toks: list[str], follow: str = "", looks_past_end: list | None = None) -> int:
    """Handle a word match; returns the index after what was consumed."""
    end = start + len(txt)
    n = len(line)
    # a word with internal periods: keep if it is an acronym (u.s.a) or word.word
    # trailing period handling
    low = txt.lower()
    if end < n and line[end] == "." and not line.startswith("...", end):
        after = line[end + 1] if end + 1 < n else ""
        acro = _ACRO.fullmatch(txt) is not None or (len(txt) == 1 and txt.isalpha())
        if looks_past_end is not None and end + 1 == n and (len(txt) == 1 or low in _ABBREV3):
            looks_past_end.append(txt)  # the two tests below read past the line
        known = low in _ABBREV1 or low in _ABBREV2 or (low in _ABBREV3 and _NUM_AFTER.match(line, end + 1))
        if len(txt) == 1 and _ACRO_SENTEND.match(line[end + 1:] + "\n" + follow):
            acro = False  # CoreNLP 3.4.1: "x." before "A ", "The ", "It " ... ends a sentence
        if acro or (known and not after.isalnum()):
            toks.append(txt + ".")
            j = end + 1
            # sentence end too when a capitalised word follows (CoreNLP looks across lines)
            rest = line[j:] + "\n" + follow
            if (low in _ABBREV1 and low not in _ABBREV2 or (acro and len(txt) > 1 and low not in ("a.m", "p.m"))) and _SENTEND.match(rest):
                toks.append(".")
            return j
    # contractions
    if low in _ASSIM:
        a, _b = _ASSIM[low]
        toks.extend([txt[: len(a)], txt[len(a):]])
        return end
    if "'" in txt and low.endswith("n't"):
        toks.extend([txt[:-3], txt[-3:]])
        return end
    if low.endswith("n") and end + 1 < n and line[end] in "'\u2019" and line[end + 1] in "tT" and (
        end + 2 >= n or not line[end + 2].isalpha()
    ):
        base = txt[:-1]
        if base:
            toks.append(base)
        toks.append(txt[-1] + "'" + line[end + 1])
        return end + 2
    if low == "y" and end + 1 < n and line[end] in "'\u2019" and line[end + 1].isalpha():
        toks.append(txt + "'")
        return end + 1
    toks.append(txt)
    return end


def ptb_tokenize(captions_for_image: Mapping[object, Iterable[object]]) -> dict[object, list[str]]:
    """Drop-in for ``PTBTokenizer().tokenize``: ``{id: [{"caption": s} | s, ...]}`` -> ``{id: ["tok tok", ...]}``.

    Like pycocoevalcap, captions are processed as one stream in dict order, because
    CoreNLP looks at the start of the next caption for a few sentence-end decisions.
    """
    keys: list[object] = []
    texts: list[str] = []
    for k, caps in captions_for_image.items():
        for c in caps:
            if type(c) is not str:
                c = c["caption"] if isinstance(c, Mapping) else c
            keys.append(k)
            texts.append(str(c).replace("\n", " "))
    out: dict[object, list[str]] = {k: [] for k in captions_for_image}
    for k, s, follow in zip(keys, texts, texts[1:] + [""]):
        out[k].append(tokenize_caption(s, follow))
    return out


_CACHE: dict[str, str] = {}  # caption -> result, for captions whose result is context-free
_CHUNKS: dict[str, "str | bool"] = {}  # space-free ASCII chunk -> its tokens, or False (context needed)
_CACHE_MAX = 1_000_000

# a single letter followed by a period: the only case where the result depends on the next
# caption (CoreNLP's sentence-end rule for "x. The ..."); deliberately broad, it only
# decides what is cached
_SINGLE_DOT = re.compile(r"(?<![^\W_])[^\W\d_]\.")
_ALNUM_CHUNK = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")  # one word, number or hyphenated word
_DOTS_THEN = re.compile(r"\.+[^.]")


def clear_caches() -> None:
    """Forget memoised captions and chunks (for benchmarks)."""
    _CACHE.clear()
    _CHUNKS.clear()


def _chunk_tokens(c: str) -> "str | bool":
    """Tokens (space-joined, lower-cased, punctuation removed) of one space-free chunk of
    printable ASCII, or ``False`` when they can depend on the neighbouring chunks.

    Every rule of :func:`ptb_tokenize_line` treats the line start and end like a space, and
    only these look across a space: SGML tags (``<a href=x>``: any chunk with ``<``); spaced
    dots (``. . .``), which can take the first ``.`` of a chunk that starts with dots and goes
    on (``.5``; chunks of dots only give removed tokens either way); and a chunk-final period
    after a single letter (``x. The``: sentence end or acronym) or after ``No`` (``No. 5``),
    which :func:`ptb_tokenize_line` reports through ``looks_past_end``. Other periods only
    decide tokens that are removed (an extra sentence-final ``.``). Any other chunk gives
    the same tokens alone as inside its caption.
    """
    if _ALNUM_CHUNK.fullmatch(c):  # one token (gonna, cannot: two)
        low = c.lower()
        if low not in _ASSIM:
            return low
    elif "<" in c or _DOTS_THEN.match(c):
        return False
    past: list = []
    toks = ptb_tokenize_line(c, looks_past_end=past)
    if past:
        return False
    return " ".join(t for t in toks if t not in PUNCTUATIONS)


def _tokenize_by_chunks(s: str) -> "str | None":
    """The caption's result assembled from memoised chunk results, or None (full scan needed)."""
    if not (s.isascii() and s.isprintable()):  # only " " separates chunks
        return None
    words = s.split()
    outs = list(map(_CHUNKS.get, words))
    if None in outs:
        for k, r in enumerate(outs):
            if r is None:
                c = words[k]
                r = outs[k] = _chunk_tokens(c)
                if len(_CHUNKS) < _CACHE_MAX:
                    _CHUNKS[c] = r
    if False in outs:
        return None
    return " ".join(filter(None, outs))


def tokenize_caption(s: str, follow: str = "") -> str:
    """One caption -> the space-joined, lower-cased tokens with PTB punctuation removed.

    ``follow`` is the next caption of the stream (only consulted for a single letter
    followed by a period). Printable-ASCII captions are assembled from memoised results of
    their space-separated chunks when no chunk needs context (see :func:`_chunk_tokens`);
    the others go through :func:`ptb_tokenize_line`. Results that do not depend on
    ``follow`` are memoised (captions repeat a lot in caption corpora).
    """
    s = s.replace("\n", " ")
    hit = _CACHE.get(s)
    if hit is not None:
        return hit
    out = _tokenize_by_chunks(s)
    if out is None:
        out = " ".join(t for t in ptb_tokenize_line(s, follow=follow) if t not in PUNCTUATIONS)
        if _SINGLE_DOT.search(s):
            return out  # may depend on the next caption: not memoised
    if len(_CACHE) < _CACHE_MAX:
        _CACHE[s] = out
    return out
