"""Practice labs: one folder per lab under labs/ (its task, hints and solution in task.md,
its setup, check, solve and a plausible wrong fix in lab.py), each run in a sandbox
builder of its own under the trainee's labs home, with the trainee's progress beside it."""
