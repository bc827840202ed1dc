"""Fault drills: real faults injected into a sandbox builder under load, and whether the
kit detects them, recovers from them and loses nothing (`invoke drill.*`)."""
