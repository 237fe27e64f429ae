"""Distributed mode: `fluxloom serve --queue redis://…` front ends and `fluxloom worker --queue
redis://…` workers sharing one queue on Redis Streams (docs/scale-out.md).

One prompt's path: the front end validates it (server/prepare.py, model choices from what the
workers advertise: affinity.py) and `redis_store.py` writes its record and its entry on its lane's
stream (`redis_queue.py`); a worker (`remote_worker.py`) claims it, runs it with the same
executor, cache and model manager as the embedded server, publishes its events to the front end's
event stream (`relay.py`) and its output files through Redis (`outputs.py`), then stores the
result and acknowledges the entry in one step. The front end relays the events to its websocket
clients and writes the files into its output folder.
"""
