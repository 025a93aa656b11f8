"""A candidate kernel: plain data, written by a template today and by an LLM tomorrow.

A candidate's sources are untrusted text. Nothing in the calling process compiles, imports or
runs them: the evaluator writes them into a fresh directory of a sandboxed child process
(:mod:`rea_kernel.evaluator`). Every candidate has a ``kernel.py`` that defines
``run(*inputs, **attributes) -> torch.Tensor``; a target may add sources it builds first (the
``cpu`` target compiles ``kernel.cpp`` into ``kernel.so`` beside it).
"""

from __future__ import annotations

import hashlib
import json
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

ParamValue = int | str | bool
ENTRY_POINT = "kernel.py"
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class Candidate(BaseModel):
    """One kernel for one operator on one target, with the parameters it was rendered from
    (empty for a hand- or LLM-written one)."""

    model_config = ConfigDict(frozen=True)

    operator: str
    target: str
    params: dict[str, ParamValue] = Field(default_factory=dict)
    sources: dict[str, str]

    @field_validator("sources")
    @classmethod
    def _plain_file_names(cls, sources: dict[str, str]) -> dict[str, str]:
        """Source names become file names in the sandbox: no paths, no hidden files."""
        for name in sources:
            if not _FILE_NAME.fullmatch(name) or ".." in name:
                raise ValueError(f"source name {name!r} is not a plain file name")
        if ENTRY_POINT not in sources:
            raise ValueError(f"a candidate needs a {ENTRY_POINT} defining run(*inputs, **attributes)")
        return sources

    @property
    def digest(self) -> str:
        """A content hash: two candidates with the same digest are the same kernel."""
        content = json.dumps([self.operator, self.target, sorted(self.sources.items())])
        return hashlib.sha256(content.encode()).hexdigest()[:16]
