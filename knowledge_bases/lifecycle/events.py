from __future__ import annotations

from typing import Any

from knowledge_bases.models import Generation, GenerationEvent


def generation_event_record(
    generation: Generation, from_status: str, to_status: str, actor: Any, note: str = ""
) -> None:
    GenerationEvent.objects.create(
        generation=generation,
        from_status=from_status,
        to_status=to_status,
        actor=actor if getattr(actor, "pk", None) else None,
        note=note[:500],
    )
