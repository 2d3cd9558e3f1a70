"""Treadle checkpoints: the only service that talks to object storage (S3 through minio)."""
