"""The worker side of ingestion: claim a job (``claim``), run it (``run``) while a thread
reports its progress (``report``), and recover jobs whose worker died (``reap``)."""

from ingestion.jobs.claim import fair_candidates, job_claim, stale_cutoff, worker_name
from ingestion.jobs.reap import jobs_reap_stale
from ingestion.jobs.report import REPORT_INTERVAL, ProgressCallback, Reporter
from ingestion.jobs.run import JobYield, job_execute, run_job_and_queue, run_yielding

__all__ = [
    "REPORT_INTERVAL",
    "JobYield",
    "ProgressCallback",
    "Reporter",
    "fair_candidates",
    "job_claim",
    "job_execute",
    "jobs_reap_stale",
    "run_job_and_queue",
    "run_yielding",
    "stale_cutoff",
    "worker_name",
]
