"""Load test of ``crowdinfer serve``: simulated annotators over HTTP on 127.0.0.1, a kill -9 of the
server in the middle, a restart, and a check that the ledger holds every acknowledged answer
exactly once.  Writes ``serve_load.md`` next to this file.

    python -m experiments.benchmarks.serve_load [--annotators 50] [--items 10000] [--seconds 20]

Bounded: at most ``--annotators`` (<= 50) clients, two phases of ``--seconds`` (<= 60) each; the
server listens on 127.0.0.1 only and is stopped at the end.  The server runs in its own process
(the ``crowdinfer serve`` command); the clients are asyncio tasks in this one, each with one
keep-alive HTTP/1.1 connection.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
CLASSES = ["c0", "c1", "c2", "c3", "c4"]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(folder: Path, port: int, log) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, "-m", "crowdinfer.cli", "serve", str(folder),
                             "--port", str(port)], stdout=log, stderr=log, env=env)


class _Conn:
    """A minimal HTTP/1.1 keep-alive client (one connection per annotator): httpx would spend
    more of the two cores than the server does."""

    def __init__(self, port: int):
        self.port, self.reader, self.writer = port, None, None

    async def request(self, method: str, path: str, token: str, body: dict | None = None):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        data = b"" if body is None else json.dumps(body).encode()
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Token: {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
        try:
            self.writer.write(head.encode() + data)
            await self.writer.drain()
            status_line = await self.reader.readuntil(b"\r\n")
            length = 0
            while True:
                line = await self.reader.readuntil(b"\r\n")
                if line == b"\r\n":
                    break
                name, _, value = line.decode().partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            payload = await self.reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.close()
            raise ConnectionError("the connection broke") from None
        return int(status_line.split()[1]), json.loads(payload or b"null")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _wait_ready(port: int, token: str, limit: float = 180.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        conn = _Conn(port)
        try:
            status, _ = await conn.request("GET", "/api/next", token)
            if status == 200:
                return time.perf_counter() - start
        except (ConnectionError, OSError):
            pass
        finally:
            conn.close()
        await asyncio.sleep(0.1)
    raise RuntimeError("the server did not come up")


async def _annotator(port, token, truth, accuracy, rng, until, acked, latencies, errors, think):
    """Answer what the server gives until ``until`` (retrying through a server outage), pausing
    an exponential ``think`` seconds on average before each answer."""
    conn = _Conn(port)
    nxt = None
    while time.perf_counter() < until:
        if think > 0:
            await asyncio.sleep(rng.exponential(think))
        try:
            if nxt is None:
                _, nxt = await conn.request("GET", "/api/next", token)
            if nxt.get("item") is None:
                await asyncio.sleep(0.5)
                nxt = None
                continue
            item = nxt["item"]
            right = truth[item]
            label = right if rng.random() < accuracy else int(rng.integers(len(CLASSES)))
            t0 = time.perf_counter()
            status, reply = await conn.request("POST", "/api/answer", token,
                                               {"item": item, "label": label})
            dt = time.perf_counter() - t0
            if status == 200:
                acked.append((token, item, label, t0))
                latencies.append((t0, dt))
                nxt = reply["next"]
            elif status == 409:  # committed before a crash, reply lost: already there
                nxt = None
            else:
                errors.append(f"{status} {str(reply)[:80]}")
                nxt = None
        except (ConnectionError, OSError) as err:  # the server is down (killed): retry shortly
            errors.append(type(err).__name__)
            conn.close()
            nxt = None
            await asyncio.sleep(0.2)
    conn.close()


async def _phase(port, tokens, truth, seconds, acked, latencies, errors, seed, think):
    until = time.perf_counter() + seconds
    rngs = [np.random.default_rng(seed + k) for k in range(len(tokens))]
    await asyncio.gather(*(_annotator(port, t, truth, 0.8, rng, until, acked, latencies, errors,
                                      think) for t, rng in zip(tokens, rngs)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--update-every", type=int, default=200)
    ap.add_argument("--think", type=float, default=0.15,
                    help="mean pause (s) of an annotator before each answer; 0: as fast as possible")
    ap.add_argument("--out", default=str(HERE / "serve_load.md"))
    ap.add_argument("--append", action="store_true", help="add this run to --out")
    args = ap.parse_args(argv)
    if not 1 <= args.annotators <= 50 or not 1 <= args.seconds <= 60:
        raise SystemExit("bounded: 1..50 annotators, 1..60 s per phase")
    from crowdinfer.serve import Project, create_project

    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    rng = np.random.default_rng(0)
    truth = {f"item{i:05d}": int(rng.integers(len(CLASSES))) for i in range(args.items)}
    pd.DataFrame({"item": list(truth), "text": [f"text of item {i}" for i in truth]}).to_csv(
        work / "items.csv", index=False)
    names = [f"annotator{k:02d}" for k in range(args.annotators)]
    create_project(work / "proj", work / "items.csv", CLASSES, update_every=args.update_every,
                   annotators=names)
    with Project(work / "proj") as p:
        tokens = [p.tokens[n] for n in names]
        first_token = tokens[0]
    port = _free_port()
    log = open(work / "server.log", "wb")
    acked, latencies, errors = [], [], []

    server = _start(work / "proj", port, log)
    server2 = None
    walls = []  # wall-clock times: phase 1 start, the kill, phase 2 start
    cpu = []  # server CPU seconds at phase 1 start, the kill, phase 2 start, phase 2 end
    try:
        # phase 1 runs; kill -9 happens while phase 1's clients are still submitting
        async def phase_one_with_kill():
            ready = await _wait_ready(port, first_token)
            walls.append(time.time())
            cpu.append(_cpu_seconds(server.pid))
            t1 = time.perf_counter()
            task = asyncio.ensure_future(_phase(port, tokens, truth, args.seconds, acked,
                                                latencies, errors, 1, args.think))
            await asyncio.sleep(args.seconds * 0.75)
            killed_at = time.perf_counter()
            walls.append(time.time())
            cpu.append(_cpu_seconds(server.pid))
            server.send_signal(signal.SIGKILL)
            await asyncio.sleep(0.05)
            await task
            return ready, t1, killed_at

        ready1, t1, killed_at = asyncio.run(phase_one_with_kill())
        server.wait()
        acked_before_kill = sum(1 for a in acked if a[3] < killed_at)
        # restart on the same folder; phase 2
        server2 = _start(work / "proj", port, log)

        async def phase_two():
            ready = await _wait_ready(port, first_token)
            walls.append(time.time())
            cpu.append(_cpu_seconds(server2.pid))
            t2 = time.perf_counter()
            await _phase(port, tokens, truth, args.seconds, acked, latencies, errors, 2, args.think)
            cpu.append(_cpu_seconds(server2.pid))
            return ready, t2

        ready2, t2 = asyncio.run(phase_two())
        end = time.perf_counter()
        server2.send_signal(signal.SIGTERM)  # graceful: a last update, the lock released
        server2.wait(timeout=120)
    finally:
        for proc in [p for p in (server, server2) if p is not None]:
            if proc.poll() is None:
                proc.kill()
        log.close()

    # -- the ledger against the acknowledgements
    db = sqlite3.connect(f"file:{work / 'proj' / 'ledger.sqlite'}?mode=ro", uri=True)
    rows = pd.read_sql_query("SELECT item, worker, label, received FROM annotations", db)
    ids = dict(db.execute("SELECT code, id FROM ids WHERE kind = 'item'").fetchall())
    wids = dict(db.execute("SELECT code, id FROM ids WHERE kind = 'worker'").fetchall())
    db.close()
    token_of = {p_tok: n for n, p_tok in zip(names, tokens)}
    ledger = {(wids[w], ids[i]): z for i, w, z in rows[["item", "worker", "label"]].itertuples(index=False)}
    pairs = rows.groupby(["item", "worker"]).size()
    missing = [a for a in acked if ledger.get((token_of[a[0]], a[1])) != a[2]]
    dup = int((pairs > 1).sum())
    extra = len(rows) - len(acked)  # committed, reply lost in the kill (then a 409 on retry)

    lat = pd.DataFrame(latencies, columns=["t", "dt"])
    p1 = lat[(lat.t >= t1) & (lat.t < killed_at)]
    p2 = lat[lat.t >= t2]

    def stats(frame, seconds):
        return (len(frame) / seconds, 1e3 * frame.dt.quantile(0.5), 1e3 * frame.dt.quantile(0.99),
                1e3 * frame.dt.max())

    s1 = stats(p1, killed_at - t1)
    s2 = stats(p2, end - t2)
    history = pd.DataFrame(_history(work / "proj"))
    updates = []
    for lo, hi in ((walls[0], walls[1]), (walls[2], walls[2] + 1e6)):
        h = history[(history["time"] >= lo) & (history["time"] < hi)] if len(history) else history
        updates.append((len(h), 1e3 * h["seconds"].median() if len(h) else float("nan"),
                        1e3 * h["seconds"].max() if len(h) else float("nan")))
    pace = (f"each pausing {args.think:g} s on average (exponential) before an answer"
            if args.think > 0 else "each answering as fast as the server replies (no pause)")
    lines = [] if args.append else [
        "# `crowdinfer serve` under load",
        "",
        "Simulated annotators (asyncio in one process, one keep-alive HTTP/1.1 connection each) "
        "against one server process (`crowdinfer serve`: Starlette on uvicorn) on 127.0.0.1, on "
        f"this machine ({os.cpu_count()} cores, shared by clients and server). Preset `ds_model`, "
        f"sampler `random`, K = {len(CLASSES)}. Each annotator answers the item the server gives it "
        "(80% right); the reply carries its next item. Latency: one POST /api/answer from send to "
        "reply; the answer is committed to the SQLite ledger (`synchronous=FULL`) before the reply. "
        "`update` runs in a background thread every `--update-every` answers. uvicorn runs on uvloop "
        "and httptools (the `serve` extra installs both). In the middle of "
        "phase 1 the server gets a kill -9; the same command restarts it on the same folder.",
        "",
    ]
    lines += [
        f"## {args.annotators} annotators, {pace}; N = {args.items:,} items, an update every "
        f"{args.update_every} answers",
        "",
        "| phase | seconds | acknowledged | submits/s | p50 ms | p99 ms | max ms | updates | update median ms | update max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| before the kill -9 | {killed_at - t1:.1f} | {len(p1)} | {s1[0]:.0f} | {s1[1]:.1f} | "
        f"{s1[2]:.1f} | {s1[3]:.1f} | {updates[0][0]} | {updates[0][1]:.0f} | {updates[0][2]:.0f} |",
        f"| after the restart | {end - t2:.1f} | {len(p2)} | {s2[0]:.0f} | {s2[1]:.1f} | "
        f"{s2[2]:.1f} | {s2[3]:.1f} | {updates[1][0]} | {updates[1][1]:.0f} | {updates[1][2]:.0f} |",
        "",
        f"- Start-up until the first reply: {ready1:.1f} s for the new project, {ready2:.1f} s after "
        "the kill -9 (the lock was free at once: the time is the JAX import and compilation, the "
        "checkpoint load and the ledger replay). Updates of phase 1 after its last checkpoint are "
        "not in the table (their state died with the process; the ledger replays their answers).",
        f"- **kill -9** {killed_at - t1:.1f} s into phase 1, {acked_before_kill} answers "
        f"acknowledged by then; {len(acked)} acknowledged over both phases.",
        f"- **Ledger check**: {len(rows)} rows. Acknowledged answers missing or with another label: "
        f"**{len(missing)}**. (item, annotator) pairs recorded more than once: **{dup}**. Rows "
        f"committed whose reply was lost in the kill (the client's retry then got a 409): {extra}.",
        f"- Server CPU time per acknowledged answer (user + system, updates included; independent "
        f"of the machine's load): {1e3 * (cpu[1] - cpu[0]) / max(len(p1), 1):.2f} ms before the "
        f"kill, {1e3 * (cpu[3] - cpu[2]) / max(len(p2), 1):.2f} ms after the restart, i.e. one "
        f"core serves about {max(len(p2), 1) / max(cpu[3] - cpu[2], 1e-9):.0f} answers/s.",
        f"- Client-side errors (connection refused while the server was down): {len(errors)}.",
        f"- Machine load when the run started (1-minute load average, 2 cores shared with other "
        f"jobs): {load:.1f}.",
        f"- Target >= 200 submits/s with p99 < 100 ms: before the kill "
        f"{'**met**' if s1[0] >= 200 and s1[2] < 100 else '**not met**'}, after the restart "
        f"{'**met**' if s2[0] >= 200 and s2[2] < 100 else '**not met**'}.",
        "",
        f"`python -m experiments.benchmarks.serve_load --annotators {args.annotators} --items "
        f"{args.items} --seconds {args.seconds:g} --update-every {args.update_every} --think "
        f"{args.think:g}{' --append' if args.append else ''}`",
        "",
    ]
    previous = Path(args.out).read_text() if args.append and Path(args.out).exists() else ""
    Path(args.out).write_text(previous + ("\n" if previous else "") + "\n".join(lines))
    print("\n".join(lines))
    return 0 if not missing and not dup else 1


def _history(folder: Path) -> list:
    from crowdinfer.online.session import checkpoint_meta

    try:
        return checkpoint_meta(folder / "checkpoint.npz")["history"]
    except FileNotFoundError:
        return []


if __name__ == "__main__":
    sys.exit(main())
