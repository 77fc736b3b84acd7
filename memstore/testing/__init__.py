"""Test helpers shipped with memstore: Avalanche's rules as plain loops (``reference``) and
loopback S3 servers (``s3server``). Not imported by the package itself."""
