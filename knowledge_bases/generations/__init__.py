"""What a generation is: one immutable-once-ready build of a knowledge base, with its own
LanceDB table and tantivy index. Views, the API, the admin, the CLI, jobs and search
import it from here.

- ``states``: the state machine; ``transition()`` is the only writer of a status.
- ``storage``: where its files live (names and paths derived once), the handles on them,
  a job's build context (``open_build``), sizes, and the outbox of files to delete.
- ``build``, ``swap``, ``gc``, ``check``: creating and finishing builds, promote and
  rollback (one pointer flip inside a transaction with the KB row locked; nothing on disk
  moves), retention, and the structural check before a generation may serve.

Nothing here starts jobs: an action that needs follow-up work (documents to index into
the generation that now serves) returns it, and the caller above does it."""

from knowledge_bases.generations.build import (
    generation_activate_first,
    generation_build_finished,
    generation_build_resume,
    generation_counts_record,
    generation_create,
    generation_documents_delete,
    generation_for_ingest,
    generation_imported,
)
from knowledge_bases.generations.build_settings import (
    BuildSettings,
    build_settings_resolve,
    embedder_permitted,
    language_resolve,
    rebuild_settings_resolve,
)
from knowledge_bases.generations.check import (
    CheckItem,
    expected_chunks,
    generation_check,
    generation_quality_record,
    quality_summary,
)
from knowledge_bases.generations.embedding import (
    embedder_get,
    query_cache,
    query_embedder_get,
    query_vector,
)
from knowledge_bases.generations.gc import generations_gc, generations_gc_all
from knowledge_bases.generations.selectors import (
    active_generation,
    generation_get,
    generation_searchable_get,
    generations_of,
    generations_searchable,
)
from knowledge_bases.generations.states import TRANSITIONS, transition
from knowledge_bases.generations.storage import (
    GenerationBuild,
    build_config,
    document_file_forget,
    document_file_share,
    document_read,
    document_sources,
    generation_reader,
    generation_size_on_disk,
    generation_store,
    knowledge_base_files_forget,
    open_build,
    reuse_cache,
    storage_cleanup_run,
    storage_options,
    table_name,
    upload_dir,
    upload_local_path,
    upload_storage_path,
    uploads_sweep,
)
from knowledge_bases.generations.swap import (
    OVERRIDE_MAX_CHARS,
    Activation,
    Verdict,
    generation_promote,
    generation_rollback,
    promote_verdict,
    rollback_verdict,
)
from knowledge_bases.generations.versions import (
    rows_visible,
    version_counts_visible,
    version_masks,
    version_show,
    versions_of_deleted_documents,
    versions_sweep,
)

__all__ = [
    "OVERRIDE_MAX_CHARS",
    "TRANSITIONS",
    "Activation",
    "BuildSettings",
    "CheckItem",
    "GenerationBuild",
    "Verdict",
    "active_generation",
    "build_config",
    "build_settings_resolve",
    "document_file_forget",
    "document_file_share",
    "document_read",
    "document_sources",
    "embedder_get",
    "embedder_permitted",
    "expected_chunks",
    "generation_activate_first",
    "generation_build_finished",
    "generation_build_resume",
    "generation_check",
    "generation_counts_record",
    "generation_create",
    "generation_documents_delete",
    "generation_for_ingest",
    "generation_get",
    "generation_imported",
    "generation_promote",
    "generation_quality_record",
    "generation_reader",
    "generation_rollback",
    "generation_searchable_get",
    "generation_size_on_disk",
    "generation_store",
    "generations_gc",
    "generations_gc_all",
    "generations_of",
    "generations_searchable",
    "knowledge_base_files_forget",
    "language_resolve",
    "open_build",
    "promote_verdict",
    "quality_summary",
    "query_cache",
    "query_embedder_get",
    "query_vector",
    "rebuild_settings_resolve",
    "reuse_cache",
    "rollback_verdict",
    "rows_visible",
    "storage_cleanup_run",
    "storage_options",
    "table_name",
    "transition",
    "upload_dir",
    "upload_local_path",
    "upload_storage_path",
    "uploads_sweep",
    "version_counts_visible",
    "version_masks",
    "version_show",
    "versions_of_deleted_documents",
    "versions_sweep",
]
