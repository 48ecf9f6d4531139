"""Load each dashboard through grafana-foundation-sdk's model and print what it understood, as JSON.

Run with the tools venv's python (tests/test_deploy_grafana.py does): the SDK is Grafana's own generated schema
of a dashboard, so a field of the wrong type or shape fails here as it would on import into Grafana.
"""

from __future__ import annotations

import json
import sys

from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard
from grafana_foundation_sdk.models.prometheus import Dataquery

plugins.register_default_plugins()
report = {}
for path in sys.argv[1:]:
    with open(path) as file:
        raw = json.load(file)
    board = Dashboard.from_json(raw)
    # Encoding back through the SDK must not lose a panel, a query or a variable.
    again = json.loads(json.dumps(board, cls=JSONEncoder))
    report[path] = {
        "uid": board.uid,
        "title": board.title,
        "variables": [[v.type_val, v.name] for v in (board.templating.list_val or [])],
        "panels": [
            {
                "type": panel.type_val,
                "title": panel.title,
                "datasource_uid": panel.datasource.uid if panel.datasource else None,
                "queries": [t.expr for t in panel.targets or [] if isinstance(t, Dataquery)],
                "targets": len(panel.targets or []),
            }
            for panel in board.panels or []
        ],
        "round_trip_panels": len(again.get("panels", [])),
        "round_trip_queries": sum(len(p.get("targets", [])) for p in again.get("panels", [])),
    }
print(json.dumps(report))
