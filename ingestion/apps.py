from django.apps import AppConfig
from django.db.models.signals import post_migrate


class IngestionConfig(AppConfig):
    name = "ingestion"
    verbose_name = "Ingestion"

    def ready(self) -> None:
        from ingestion.schedules import ensure_schedules  # app modules load after the registry

        post_migrate.connect(ensure_schedules, sender=self)
        from django_q.signals import post_spawn

        post_spawn.connect(_preload_in_worker, dispatch_uid="ragstudio-preload")


def _preload_in_worker(**_kwargs: object) -> None:
    # A django-q2 worker process, before it reads its first task.
    from ragstudio.readiness import preload

    preload("worker")
