#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragstudio.settings")
    from django.core.management import execute_from_command_line

    from ragstudio.core.origin import set_process_origin

    # What this process does outside web requests is audited as a command's or a worker's.
    set_process_origin("worker" if sys.argv[1:2] == ["qcluster"] else "cli")

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
