"""Knowledge-base services: creating, changing and deleting knowledge bases, and the
actions on their generations (rebuild and its plan, promote, roll back, collect, what
follows a build)."""

from knowledge_bases.services.audit import audit_events_filtered, audit_events_prune
from knowledge_bases.services.generations import (
    generation_build_ended,
    generation_promote,
    generation_rebuild_start,
    generation_rollback,
    generations_gc,
    generations_gc_all,
)
from knowledge_bases.services.keys import api_key_create, api_key_revoke, api_keys_of
from knowledge_bases.services.knowledge_bases import (
    knowledge_base_create,
    knowledge_base_delete,
    knowledge_base_update,
)
from knowledge_bases.services.plan import (
    RebuildPlan,
    SettingChange,
    generation_rebuild_plan,
    rebuild_plan_execute,
    rebuild_plan_get,
    rebuild_plan_of,
    rebuild_plan_request,
    rebuild_plans_prune,
)

__all__ = [
    "RebuildPlan",
    "SettingChange",
    "api_key_create",
    "api_key_revoke",
    "api_keys_of",
    "audit_events_filtered",
    "audit_events_prune",
    "generation_build_ended",
    "generation_promote",
    "generation_rebuild_plan",
    "generation_rebuild_start",
    "generation_rollback",
    "generations_gc",
    "generations_gc_all",
    "knowledge_base_create",
    "knowledge_base_delete",
    "knowledge_base_update",
    "rebuild_plan_execute",
    "rebuild_plan_get",
    "rebuild_plan_of",
    "rebuild_plan_request",
    "rebuild_plans_prune",
]
