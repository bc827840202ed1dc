"""The build cache: one backend class per kind (registry, inline, s3, local), the proofs
that a backend works, the lab's registry and S3 server, base images, warming, prune and
retention, and the cache benchmark."""
