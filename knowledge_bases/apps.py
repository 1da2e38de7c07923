from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import pre_delete


class KnowledgeBasesConfig(AppConfig):
    name = "knowledge_bases"
    verbose_name = "Knowledge bases"

    def ready(self) -> None:
        from knowledge_bases.models import orphan_slugs_made_unique
        from knowledge_bases.signals import connect

        connect()
        pre_delete.connect(
            orphan_slugs_made_unique,
            sender=settings.AUTH_USER_MODEL,
            dispatch_uid="knowledge-bases-orphan-slugs",
        )
