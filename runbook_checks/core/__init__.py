"""The kit's foundation: errors, paths, files, results, parameters and profiles, layout,
the runbook runner. It imports nothing else of runbook_checks."""
