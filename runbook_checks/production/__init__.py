"""The production builder: rehearsal hosts (systemd as PID 1), the front door (mTLS in
front of buildkitd's socket), the certificate authority, the audit log, policies and
scanning."""
