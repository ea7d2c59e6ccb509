"""BENCHMARK PEER: the consumer a user would write from the Azure SDK for
Python documentation: receive_messages in pages of 32, json.loads,
delete_message, in a loop. `pool` deletes through a thread pool of 16.

bench_consumer.py CONNECTION_STRING QUEUE COUNT seq|pool
prints `START <ns>` before the first receive and `END <ns> <handled>`."""
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from azure.storage.queue import QueueClient

conn, name, count, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
queue = QueueClient.from_connection_string(conn, name)
pool = ThreadPoolExecutor(16) if mode == "pool" else None
pending = []
print("START", time.time_ns(), flush=True)
handled = 0
empty = 0
while handled < count and empty < 500:
    got = 0
    for msg in queue.receive_messages(messages_per_page=32, visibility_timeout=300):
        json.loads(msg.content)
        if pool:
            pending.append(pool.submit(queue.delete_message, msg))
        else:
            queue.delete_message(msg)
        handled += 1
        got += 1
        if handled >= count:
            break
    if got == 0:
        empty += 1
        time.sleep(0.01)
for f in pending:
    f.result()
print("END", time.time_ns(), handled, flush=True)
