#!/usr/bin/env python3
"""Django's command-line utility for the djangoapp example (settings come from the environment: see README.md)."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoapp.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
