from django.apps import AppConfig


class KnowledgeBasesConfig(AppConfig):
    name = "knowledge_bases"
    verbose_name = "Knowledge bases"
