"""Campaign files: the YAML a person hands ``rea submit``, parsed without trusting it.

YAML can describe a small document that expands into a huge one (aliases to aliases: the
"billion laughs"); PyYAML's safe loader shares the aliased objects, so the bomb goes off later,
when the campaign is encoded as an event. Campaign files never need aliases, so they are
refused, and a file and its document count are bounded.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_TEXT_BYTES = 1 << 20
MAX_DOCUMENTS = 1000


class _NoAliases(yaml.SafeLoader):
    """The safe loader, refusing ``*alias`` nodes."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", mark)
        node: yaml.Node | None = super().compose_node(parent, index)
        return node


def campaign_documents(text: str) -> list[dict[str, Any]]:
    """Every campaign in ``text``: one mapping, a YAML stream of them (``---``), or a
    ``campaigns:`` list (a portfolio). Raises ValueError saying what is wrong."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_TEXT_BYTES:
        raise ValueError(f"{size} bytes: a campaign file holds at most {MAX_TEXT_BYTES}")
    documents: list[Any] = []
    try:
        for document in yaml.load_all(text, Loader=_NoAliases):
            if document is not None:
                documents.append(document)
            if len(documents) > MAX_DOCUMENTS:
                raise ValueError(f"more than {MAX_DOCUMENTS} documents")
    except yaml.YAMLError as error:
        raise ValueError(f"not valid YAML: {error}") from None
    if len(documents) == 1 and isinstance(documents[0], dict) and set(documents[0]) == {"campaigns"}:
        documents = documents[0]["campaigns"] or []
        if not isinstance(documents, list):
            raise ValueError("`campaigns:` must be a list of campaigns")
    if not documents or not all(isinstance(d, dict) for d in documents):
        raise ValueError(
            "expected a mapping of campaign fields, several (a YAML stream), or a `campaigns:` list of them"
        )
    if len(documents) > MAX_DOCUMENTS:
        raise ValueError(f"more than {MAX_DOCUMENTS} campaigns")
    return [dict(d) for d in documents]


__all__ = ["MAX_DOCUMENTS", "MAX_TEXT_BYTES", "campaign_documents"]
