"""Monitoring: the kit's exporter, Prometheus with the kit's recording and alert rules
(tested by generated promtool cases), Alertmanager and the notification sink, and the
dashboards drawn from the same panels as the Grafana JSON."""
