from django.urls import path

from ingestion import views

urlpatterns = [
    path("<int:job_id>/", views.job_detail, name="job-detail"),
    path("<int:job_id>/cancel/", views.job_cancel, name="job-cancel"),
    path("<int:job_id>/retry/", views.job_retry, name="job-retry"),
]
