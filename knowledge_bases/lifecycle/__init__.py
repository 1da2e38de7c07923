"""The generation lifecycle: the one place where a generation's status changes.

building -> ready -> active -> archived -> collected; failed from building; the first
generation goes building -> active when its first job ends.

Promote and rollback flip KnowledgeBase.active_generation inside one transaction with the
KB row locked; nothing on disk moves (measured: a pointer in SQL gave 0 failed searches
during swaps, directory renames 29-35). GC changes the database first and deletes files
after, so a crash between the two leaves files that nothing references, which the next
GC deletes.

Nothing here starts jobs: an action that needs follow-up work (documents to index into
the generation that now serves) returns it, and the caller above does it.
"""

from knowledge_bases.lifecycle.build import (
    generation_activate_first,
    generation_build_finished,
    generation_build_resume,
    generation_counts_record,
    generation_create,
    generation_fingerprint_record,
    generation_for_ingest,
    generation_paths,
)
from knowledge_bases.lifecycle.check import (
    CheckItem,
    expected_chunks,
    generation_check,
    generation_quality_record,
    quality_summary,
)
from knowledge_bases.lifecycle.events import generation_event_record
from knowledge_bases.lifecycle.gc import (
    generations_gc,
    generations_gc_all,
    knowledge_base_files_forget,
    storage_cleanup_run,
)
from knowledge_bases.lifecycle.swap import (
    Activation,
    Verdict,
    generation_promote,
    generation_rollback,
    promote_verdict,
    rollback_verdict,
)

__all__ = [
    "Activation",
    "CheckItem",
    "Verdict",
    "expected_chunks",
    "generation_activate_first",
    "generation_build_finished",
    "generation_build_resume",
    "generation_check",
    "generation_counts_record",
    "generation_create",
    "generation_event_record",
    "generation_fingerprint_record",
    "generation_for_ingest",
    "generation_paths",
    "generation_promote",
    "generation_quality_record",
    "generation_rollback",
    "generations_gc",
    "generations_gc_all",
    "knowledge_base_files_forget",
    "promote_verdict",
    "quality_summary",
    "rollback_verdict",
    "storage_cleanup_run",
]
