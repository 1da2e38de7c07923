from django.apps import AppConfig


class IngestionConfig(AppConfig):
    name = "ingestion"
    verbose_name = "Ingestion"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from ingestion.tasks import ensure_schedules

        post_migrate.connect(ensure_schedules, sender=self)
