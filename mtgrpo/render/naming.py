"""Job names by content hash: ``<slug>-<hash>``.

SageMaker job specs are immutable and a job name can never be reused, so the name carries a
hash of everything that defines the job: any change gives a new resource and a new job, and an
unchanged recipe keeps its name. The hash is the first ``HASH_CHARS`` hex digits of SHA-256
over the canonical JSON (sorted keys, no spaces) of what the caller passes; the renderer passes
the kind, the namespace, the region annotation, the recipe name and the whole spec without its
name field (each backend's ``hash_input``, e.g. :func:`mtgrpo.ack.render.hash_input`, docs/recipes.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping

TRAINING_JOB_NAME_LIMIT = 63
TUNING_JOB_NAME_LIMIT = 32
HASH_CHARS = 10
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def spec_hash(spec_without_name: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(canonical_json(spec_without_name).encode("utf-8")).hexdigest()
    return digest[:HASH_CHARS]


def job_name(slug: str, spec_without_name: Mapping[str, Any], limit: int) -> str:
    """``<slug>-<hash>``, the slug cut so the whole fits ``limit`` characters.

    The result matches SageMaker's ``^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$`` and is lower case
    (it is also the resource's ``metadata.name``).
    """
    if limit < HASH_CHARS + 2:
        raise ValueError(f"limit {limit} leaves no room for a slug and a {HASH_CHARS}-char hash")
    cleaned = re.sub(r"[^a-z0-9-]+", "-", slug.lower())
    room = limit - HASH_CHARS - 1
    cut = cleaned[:room].strip("-")
    name = f"{cut}-{spec_hash(spec_without_name)}" if cut else spec_hash(spec_without_name)
    assert NAME_PATTERN.match(name) and len(name) <= limit, name
    return name
