"""CapArena-Auto's judge prompts, read from the user's own copy of the reference.

The CapArena repository (njucckevin/CapArena) states no licence, so pixscribe does not carry
its prompt text. A judged metric is only the same metric when its judge reads the same words,
so the prompts are read from the reference's ``vlm_as_a_judge.py`` in a checkout the user
names (``--caparena-prompts FILE``), without running it: :func:`load` walks the file's syntax
tree for the two module-level system prompts (``system_prompt_with_ref``,
``system_prompt_without_ref``) and the two ``compare_prompt = f"..."`` templates (with the
reference caption first, then without), and turns each f-string into a ``str.format``
template (``{caption_1}``, ``{caption_2}``, ``{caption_ref}``).

The texts are checked against the sha256 of those of commit ``c251cdd`` (:data:`KNOWN`), the
version pixscribe's numbers were checked against (docs/metrics.md); other texts are refused
unless ``caparena.allow_other_prompts=true``, and the report records the file and the hash.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

from ..errors import InputFileError
from ..io.files import read_regular

SYSTEM = {"system_with_ref": "system_prompt_with_ref", "system_without_ref": "system_prompt_without_ref"}
COMPARE = ("compare_with_ref", "compare_without_ref")  # in the order the reference's branches give them
FIELDS = {"caption_1", "caption_2", "caption_ref"}
# sha256 of json.dumps(prompts, sort_keys=True) for njucckevin/CapArena vlm_as_a_judge.py @ c251cdd
KNOWN = "d145f527d1ba0c0c9de6f74c7565be524a2ed66ca6b25caa543abab572ce4ac4"
FLAG = "--caparena-prompts"


class PromptFileError(InputFileError):
    kind = "PromptFileError"  # as error rows and messages named it before it joined the family


def digest(prompts: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(prompts, sort_keys=True).encode("utf-8")).hexdigest()


def load(path: str | Path, allow_other: bool = False) -> dict[str, str]:
    """The four prompts of CapArena's ``vlm_as_a_judge.py`` at ``path`` (never executed)."""
    p = Path(path)
    try:
        tree = ast.parse(read_regular(p).decode("utf-8"), filename=str(p))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError) as exc:
        raise PromptFileError(f"{FLAG} {p}: cannot read it as Python source ({exc})") from None
    out = _system_prompts(tree, p)
    templates = [_template(n.value, p) for n in ast.walk(tree) if _assigns(n, "compare_prompt")]
    if len(templates) != 2:
        raise PromptFileError(f"{FLAG} {p}: expected two `compare_prompt = f\"...\"` assignments, found "
                              f"{len(templates)}; is it CapArena's vlm_as_a_judge.py?")
    out.update(zip(COMPARE, templates))
    if digest(out) != KNOWN and not allow_other:
        raise PromptFileError(f"{FLAG} {p}: its prompts are not those of CapArena @ c251cdd (sha256 {digest(out)[:12]}…"
                              "), so scores would not compare with published ones; pass --detail-option "
                              "caparena.allow_other_prompts=true to judge with them anyway")
    return out


def _assigns(node: ast.AST, name: str) -> bool:
    return (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == name)


def _system_prompts(tree: ast.Module, p: Path) -> dict[str, str]:
    found = {n.targets[0].id: n.value for n in tree.body if isinstance(n, ast.Assign) and len(n.targets) == 1
             and isinstance(n.targets[0], ast.Name)}
    out = {}
    for key, var in SYSTEM.items():
        v = found.get(var)
        if not (isinstance(v, ast.Constant) and isinstance(v.value, str)):
            raise PromptFileError(f"{FLAG} {p}: no module-level string `{var}`; is it CapArena's vlm_as_a_judge.py?")
        out[key] = v.value
    return out


def _template(node: ast.AST, p: Path) -> str:
    """An f-string of names only -> the same text as a ``str.format`` template."""
    if not isinstance(node, ast.JoinedStr):
        raise PromptFileError(f"{FLAG} {p}: `compare_prompt` is not an f-string")
    parts = []
    for v in node.values:
        if isinstance(v, ast.Constant) and isinstance(v.value, str):
            parts.append(v.value.replace("{", "{{").replace("}", "}}"))
        elif (isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name) and v.value.id in FIELDS
              and v.conversion == -1 and v.format_spec is None):
            parts.append("{" + v.value.id + "}")
        else:
            raise PromptFileError(f"{FLAG} {p}: `compare_prompt` has a field other than {', '.join(sorted(FIELDS))}")
    return "".join(parts)
