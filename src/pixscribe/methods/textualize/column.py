"""A stage that takes a field from an input column instead of a model (``--description-column``).

Image Textualization's main use is to improve descriptions that already exist (LLaVA's,
ShareGPT4V's, GPT-4V's): this stage makes such a column the ``description`` the later
stages read. A row whose column is empty fails with the column's name.
"""

from __future__ import annotations

from typing import Any

from ...api.stage import Stage
from ...record import Record


class ColumnStage(Stage):
    needs_image = False

    def __init__(self, name: str, column: str, provides: str, shown_as: str | None = None):
        self.name = name
        self.column = column
        self.shown_as = shown_as or column  # the column's name as the user gave it
        self.needs = (column,)
        self.provides = (provides,)

    def options(self) -> dict[str, Any]:
        return {"column": self.shown_as}

    def __call__(self, records: list[Record]) -> list[Record]:
        for r in records:
            v = r.fields.get(self.column, r.columns.get(self.column))
            if not isinstance(v, str) or not v.strip():
                r.fail(f"column {self.shown_as!r} is empty for this row: nothing to textualize", "input")
                continue
            r.set(self.provides[0], v.strip(), stage=self.name, source=f"column:{self.shown_as}", seconds=0.0)
        return records
