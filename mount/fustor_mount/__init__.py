"""fustor-mount: a Fusion view as a read-only FUSE filesystem (entry point: cli.py)."""
