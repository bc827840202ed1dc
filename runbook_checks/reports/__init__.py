"""Reports that read across the domains: the handover checklist."""
