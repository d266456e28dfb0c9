#!/usr/bin/env python3
"""The fleet's benchmarks (issue 17).

Records into one index node: a real nats-server and a real
`edgesnap` with `roles = ["index"]`; `records_flood` publishes record events
at each rate (as edges storing one snapshot per stream every 5 s would) for
SECONDS; reported per rate: the rate reached, the index node's pending
events while it ran (p50/p99/max, and in seconds at that rate), the time
after the flood until everything was indexed, and the CPU of the index
node and of nats-server.

Config-change propagation: three real nodes on one nats-server; a token
minted through node A, timed from A's answer until B and C both accept it
(polled every ms), N times: p50/p99/max.

  python3 scripts/bench_fleet.py --bin target/release/edgesnap \\
      --flood target/release/examples/records_flood --nats nats-server \\
      --rates 5000,10000 --seconds 60 --changes 200
"""
import argparse, json, os, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.error, urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def wait_port(port, proc, what, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            sys.exit(f"{what} exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not listen on {port}")


def write_node_config(d, http, nats_port, node_id, roles):
    """A fleet node's config in d/edgesnap.toml: domain `bench` on a local directory."""
    open(f"{d}/edgesnap.toml", "w").write(f"""version = 1
[server]
rtmp_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:{http}"
data_dir = "{d}/data"
operator_token = "bench-operator-token-0123"
[domains."bench".storage.main]
type = "local"
path = "{d}/snapshots"
[fleet]
nats_url = "nats://127.0.0.1:{nats_port}"
node_id = "{node_id}"
roles = {roles}
""")


def pending(monitor, consumer):
    """The consumer's pending events, from nats-server's /jsz."""
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/jsz?consumers=true", timeout=5) as r:
        v = json.load(r)
    for account in v.get("account_details", []):
        for stream in account.get("stream_detail", []):
            for c in stream.get("consumer_detail", []) or []:
                if c["name"] == consumer:
                    return c["num_pending"] + c["num_ack_pending"]
    return None


def run(args, rate):
    d = tempfile.mkdtemp(prefix="edgesnap-records-")
    try:
        port, monitor, http = free_port(), free_port(), free_port()
        nats = subprocess.Popen([args.nats, "-js", "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor),
                                 "-sd", f"{d}/nats"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, nats, "nats-server")
        write_node_config(d, http, port, "bench-index", '["index"]')
        host = subprocess.Popen([args.bin, "serve", "--config", f"{d}/edgesnap.toml"],
                                stderr=open(f"{d}/edgesnap.log", "w"), env={**os.environ, "RUST_LOG": "warn"})
        try:
            wait_port(http, host, "edgesnap")
            consumer = "index-bench-index"
            end = time.time() + 30
            while pending(monitor, consumer) is None:
                if time.time() > end:
                    sys.exit("the index node made no consumer")
                time.sleep(0.2)
            c0, n0, t0 = cpu_s(host.pid), cpu_s(nats.pid), time.time()
            out = subprocess.run([args.flood, f"nats://127.0.0.1:{port}", str(rate), str(args.seconds),
                                  str(args.streams), consumer], capture_output=True, text=True,
                                 timeout=args.seconds + 120)
            if out.returncode != 0:
                sys.exit(f"records_flood failed: {out.stderr}")
            flood = json.loads(out.stdout.strip().splitlines()[-1])
            t_flood = time.time()
            end = time.time() + 300
            while (p := pending(monitor, consumer)) != 0:
                if time.time() > end:
                    sys.exit(f"not indexed 300 s after the flood: {p} pending")
                time.sleep(0.1)
            t_done = time.time()
            c1, n1 = cpu_s(host.pid), cpu_s(nats.pid)
            # One stream's records, read back through the index node's API.
            req = urllib.request.Request(
                "http://127.0.0.1:%d/v1/domains/bench/snapshots?app=live&stream=s0&start_time=2000-01-01T00:00:00Z"
                "&end_time=2100-01-01T00:00:00Z&limit=100" % http,
                headers={"Authorization": "Bearer bench-operator-token-0123"})
            listed = len(json.load(urllib.request.urlopen(req, timeout=10))["snapshots"])
            expected_s0 = min(100, (flood["published"] + args.streams - 1) // args.streams)
            return dict(rate=rate, reached=round(flood["rate"]), published=flood["published"],
                        lag_p50_s=round(flood["lag_p50_s"], 3), lag_p99_s=round(flood["lag_p99_s"], 3),
                        lag_max_s=round(flood["lag_max_s"], 3), drain_s=round(t_done - t_flood, 2),
                        indexed_per_s=round(flood["published"] / (t_done - t0)),
                        index_cpu=round((c1 - c0) / (t_done - t0) * 100), nats_cpu=round((n1 - n0) / (t_done - t0) * 100),
                        listed_s0=listed, expected_s0=expected_s0)
        finally:
            host.send_signal(signal.SIGTERM)
            try: host.wait(30)
            except subprocess.TimeoutExpired: host.kill()
            nats.kill(); nats.wait()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def api(port, method, path, token="bench-operator-token-0123", body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None


def propagation(args):
    d = tempfile.mkdtemp(prefix="edgesnap-propagation-")
    procs = []
    try:
        port = free_port()
        nats = subprocess.Popen([args.nats, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", f"{d}/nats"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(nats)
        wait_port(port, nats, "nats-server")
        https = []
        for name in ["a", "b", "c"]:
            http = free_port()
            os.makedirs(f"{d}/{name}")
            write_node_config(f"{d}/{name}", http, port, f"node-{name}", '["edge"]')
            p = subprocess.Popen([args.bin, "serve", "--config", f"{d}/{name}/edgesnap.toml"],
                                 stderr=open(f"{d}/{name}/edgesnap.log", "w"), env={**os.environ, "RUST_LOG": "warn"})
            procs.append(p)
            wait_port(http, p, f"node {name}")
            https.append(http)
        a, others = https[0], https[1:]
        delays = []
        end = time.time() + 60
        while len(delays) < args.changes:
            status, body = api(a, "POST", "/v1/domains/bench/tokens", body={"label": "p"})
            if status != 201:
                if time.time() > end:
                    sys.exit(f"minting through node a: {status}")
                time.sleep(0.2)   # the node is not following the control plane yet
                continue
            t0 = time.perf_counter()
            for port_b in others:
                deadline = time.time() + 10
                while api(port_b, "GET", "/v1/whoami", token=body["token"])[0] != 200:
                    if time.time() > deadline:
                        sys.exit("a change did not reach every node in 10 s")
                    time.sleep(0.001)
            delays.append(time.perf_counter() - t0)
        delays.sort()
        q = lambda p: delays[round((len(delays) - 1) * p)] * 1000
        print(f"config-change propagation over 3 nodes, {len(delays)} changes: "
              f"p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, max {delays[-1] * 1000:.1f} ms", flush=True)
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try: p.wait(30)
            except subprocess.TimeoutExpired: p.kill()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True); ap.add_argument("--flood", required=True)
    ap.add_argument("--nats", required=True)
    ap.add_argument("--rates", default="5000,10000"); ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--streams", type=int, default=25000)
    ap.add_argument("--changes", type=int, default=200, help="config changes timed (0: skip)")
    args = ap.parse_args()
    if args.changes:
        propagation(args)
    print("rate/s  reached/s  indexed/s  lag p50/p99/max s  drain s  index CPU  nats CPU  s0 listed")
    for rate in [int(r) for r in args.rates.split(",")]:
        r = run(args, rate)
        print(f"{r['rate']:>6}  {r['reached']:>9}  {r['indexed_per_s']:>9}  "
              f"{r['lag_p50_s']}/{r['lag_p99_s']}/{r['lag_max_s']:<8}  {r['drain_s']:>7}  "
              f"{r['index_cpu']:>8} %  {r['nats_cpu']:>6} %  {r['listed_s0']}/{r['expected_s0']}", flush=True)
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
