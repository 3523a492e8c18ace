"""Reconciliation: where NetSuite and Zuora or Zoho disagree, and the one-click fixes (issue #10).

- checks.py: per flow, what NetSuite holds against what the target holds (bulk reads, field diffs,
  invoice totals per period and customer);
- readers.py: the bulk reads, through each connection's shared client;
- compare.py: how two renderings of a value are made comparable;
- run.py: the daily schedule, the pickup of requested runs, one run with progress under a lease;
- service.py: what the page calls (request, progress, totals, drift list, CSV, accept, link, re-sync)
  and the pre-create lookup the audit page's replay can call (`existing_target`).
"""
