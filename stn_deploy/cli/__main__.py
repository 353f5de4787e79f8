"""``python -m stn_deploy.cli``."""

from stn_deploy.cli import main

main()
