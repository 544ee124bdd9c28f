"""The alert schema as a table for people: one row per field of :class:`engine.alert.Alert`,
with its type, whether it is required, the TradingView placeholder that fills it and what it
means. ``tvgw schema --markdown`` prints it for the documentation, so the page that tells a
user what to paste into TradingView is made from the same model that validates the alert."""

from __future__ import annotations

import re

from engine.alert import Alert

__all__ = ["alert_field_table", "markdown_table"]


def _literal_choices(match: re.Match[str]) -> str:
    """``Literal['isolated', 'cross']`` as the documentation says it: ``isolated or cross``."""
    return match[1].replace("'", "").replace(", ", " or ")


def _type_name(annotation: object) -> str:
    """A field's type as a reader says it: ``float or None``, ``buy or sell``."""
    text = str(annotation).replace("typing.", "").replace("engine.alert.", "")
    text = re.sub(r"<(?:class|enum) '([\w.]+)'>", r"\1", text).replace("datetime.", "")
    text = text.replace(" | ", " or ")
    text = re.sub(r"^Optional\[(.*)\]$", r"\1 or None", text)
    return re.sub(r"Literal\[([^\]]*)\]", _literal_choices, text)


def alert_field_table() -> list[dict[str, str]]:
    """Rows (field, type, required, placeholder, description), in the model's field order."""
    rows = []
    for name, info in Alert.model_fields.items():
        if name == "extras":
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        rows.append(
            {
                "field": name,
                "type": _type_name(info.annotation),
                "required": "yes" if info.is_required() else "no",
                "placeholder": str(extra.get("placeholder") or ""),
                "description": info.description or "",
            }
        )
    return rows


def markdown_table() -> str:
    """The rows as a Markdown table."""
    lines = ["| field | type | required | TradingView placeholder | meaning |", "|---|---|---|---|---|"]
    for row in alert_field_table():
        placeholder = f"`{row['placeholder']}`" if row["placeholder"] else ""
        lines.append(
            f"| `{row['field']}` | {row['type']} | {row['required']} | {placeholder} | {row['description']} |"
        )
    return "\n".join(lines)
