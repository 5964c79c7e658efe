"""Outlook-shaped load, independent of the load tool: accounts, cohorts, the simulated Outlook client and its
disconnect records. ``locustfiles/`` runs these under Locust; nothing here imports Locust or gevent."""
