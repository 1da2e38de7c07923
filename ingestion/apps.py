from django.apps import AppConfig
from django.db.models.signals import post_migrate


class IngestionConfig(AppConfig):
    name = "ingestion"
    verbose_name = "Ingestion"

    def ready(self) -> None:
        from ingestion.schedules import ensure_schedules  # app modules load after the registry

        post_migrate.connect(ensure_schedules, sender=self)
