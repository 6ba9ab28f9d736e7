"""Cost of job results: pgq.claim + pgq.complete_many at batch 100, with and without a
small JSON result per job, in interleaved rounds on one server.

    python bench/results.py [--dsn DSN] [--clients 2] [--transactions 300] [--rounds 3]

Uses DATABASE_URL (or --dsn) when given, else a throwaway local cluster with durable
settings. Each run drains a fresh, preloaded database with a fixed number of
transactions, so the queue never runs dry. Prints each round and the ratio of the
medians (results / none); the bar is >= 0.90.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from engine import fresh_database, pgbench, preload, server

SCRIPTS = {
    "no results": "pgq_claim_complete.pgbench",
    "small results": "pgq_claim_complete_results.pgbench",
}
BATCH = 100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--transactions", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in SCRIPTS}
    with server(args.dsn) as server_dsn:
        for round_no in range(1, args.rounds + 1):
            for name, script in SCRIPTS.items():
                with fresh_database(server_dsn) as dsn:
                    preload(dsn, args.clients * args.transactions * BATCH)
                    tps = pgbench(dsn, script, clients=args.clients,
                                  transactions=args.transactions, batch=BATCH)
                rates[name].append(tps * BATCH)
                print(f"round {round_no}  {name:<13}  {tps * BATCH:>10,.0f} jobs/s", flush=True)
    medians = {name: statistics.median(r) for name, r in rates.items()}
    print(f"\npgq.claim + pgq.complete_many, batch {BATCH}, {args.clients} clients, "
          f"median of {args.rounds} rounds")
    for name, median in medians.items():
        print(f"{name:<13}  {median:>10,.0f} jobs/s")
    print(f"results / none: {medians['small results'] / medians['no results']:.3f}"
          " (bar: >= 0.90)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
