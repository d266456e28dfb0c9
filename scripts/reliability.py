#!/usr/bin/env python3
"""Reliability run (issue 6): N real-time streams into a real S3-compatible
server (moto) behind a gate that cuts it off for a while, with a callback
receiver; then counts captured vs stored vs skipped vs lost, callbacks
sent vs acknowledged, and the spool's peak. Run through `just reliability`.

  reliability.py --bin EDGESNAP --loadgen LOADGEN --moto MOTO_SERVER --out DIR
                 [--streams 50] [--before 60] [--outage 300] [--after 60]
"""
import argparse, http.server, json, os, socket, subprocess, sys, tempfile, threading, time, urllib.parse, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import free_port, make_clip, metrics, wait_http  # noqa: E402

TOKEN = "rel-operator-token-0123456789"


class Gate:
    """A TCP forwarder that can be taken down: closes new and open connections."""

    def __init__(self, to):
        self.to, self.up, self.conns = to, True, []
        self.sock = socket.socket(); self.sock.bind(("127.0.0.1", 0)); self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            c, _ = self.sock.accept()
            if not self.up:
                c.close(); continue
            try:
                s = socket.create_connection(("127.0.0.1", self.to))
            except OSError:
                c.close(); continue
            self.conns.append((c, s))
            for a, b in ((c, s), (s, c)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d: break
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try: x.shutdown(socket.SHUT_RDWR)
            except OSError: pass

    def set_up(self, up):
        self.up = up
        if not up:
            for c, s in self.conns:
                for x in (c, s):
                    try: x.shutdown(socket.SHUT_RDWR)
                    except OSError: pass
            self.conns = []


class Receiver(http.server.BaseHTTPRequestHandler):
    posts, ids = 0, set()
    lock = threading.Lock()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with Receiver.lock:
            Receiver.posts += 1
            Receiver.ids.add(body["id"])
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()

    def log_message(self, *a):
        pass


def api(http, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{http}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read() or b"null")


def records(http):
    """Every sequential record of app `live`, paging through the API."""
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    out, start, token = [], "1970-01-01T00:00:00Z", None
    while True:
        q = {"app": "live", "start_time": start, "end_time": end, "limit": 100}
        if token: q["next_token"] = token
        page = api(http, "GET", "/v1/domains/bench/snapshots?" + urllib.parse.urlencode(q))
        out += [r for r in page["snapshots"] if not r["is_overlay"]]
        token = page.get("next_token")
        if not token: return out
        start = page["next_start_time"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True); ap.add_argument("--loadgen", required=True)
    ap.add_argument("--moto", required=True); ap.add_argument("--out", required=True)
    ap.add_argument("--streams", type=int, default=50); ap.add_argument("--before", type=int, default=60)
    ap.add_argument("--outage", type=int, default=300); ap.add_argument("--after", type=int, default=60)
    args = ap.parse_args()
    clip = make_clip(args.out)
    d = tempfile.mkdtemp(prefix="edgesnap-rel-")
    s3 = free_port()
    moto = subprocess.Popen([args.moto, "-H", "127.0.0.1", "-p", str(s3)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{s3}/snaps", method="PUT"), timeout=1); break
        except OSError:
            time.sleep(0.1)
    gate = Gate(s3)
    rx = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=rx.serve_forever, daemon=True).start()
    rtmp, http_port = free_port(), free_port()
    open(f"{d}/edgesnap.toml", "w").write(f"""version = 1
[server]
rtmp_listen = "127.0.0.1:{rtmp}"
http_listen = "127.0.0.1:{http_port}"
data_dir = "{d}/data"
operator_token = "{TOKEN}"
default_domain = "bench"
allow_private_callbacks = true
[domains."bench".storage.s3]
type = "s3"
endpoint = "http://127.0.0.1:{gate.port}"
bucket = "snaps"
access_key_id_env = "REL_KEY"
secret_access_key_env = "REL_KEY"
[[domains."bench".snapshot_configs]]
app_name = "*"
time_interval = 5
storage = "s3"
overwrite_object = "{{AppName}}/{{StreamName}}.jpg"
sequence_object = "{{AppName}}/{{StreamName}}/{{Sequence}}.jpg"
""")
    host = subprocess.Popen([args.bin, "serve", "--config", f"{d}/edgesnap.toml"],
                            stderr=open(f"{d}/edgesnap.log", "w"), env={**os.environ, "RUST_LOG": "warn", "REL_KEY": "testing"})
    wait_http(http_port)
    api(http_port, "PUT", "/v1/domains/bench/notify", {"notify_url": f"http://127.0.0.1:{rx.server_port}/hook"})
    total = args.before + args.outage + args.after
    load = subprocess.Popen([args.loadgen, "--url", f"rtmp://127.0.0.1:{rtmp}/live", "--flv", clip, "--streams",
                             str(args.streams), "--seconds", str(total), "--ramp", "5"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak_entries, emptied = 0, None
    def phase(seconds, up_since=None):
        # With up_since: notes when the spool is first empty after storage came back.
        nonlocal peak_entries, emptied
        end = time.time() + seconds
        while time.time() < end:
            time.sleep(1)
            entries = api(http_port, "GET", "/readyz")["spool"]["entries"]
            peak_entries = max(peak_entries, entries)
            if up_since is not None and emptied is None and entries == 0:
                emptied = time.time() - up_since
    print(f"{args.streams} streams: {args.before} s up", flush=True)
    phase(args.before)
    gate.set_up(False)
    print(f"storage down for {args.outage} s", flush=True)
    phase(args.outage)
    down = api(http_port, "GET", "/readyz")
    gate.set_up(True)
    up = time.time()
    print(f"storage up for {args.after} s", flush=True)
    phase(args.after, up)
    load.wait()
    while emptied is None and time.time() - up < 900:
        if api(http_port, "GET", "/readyz")["spool"]["entries"] == 0:
            emptied = time.time() - up
        time.sleep(1)
    drained = emptied if emptied is not None else float("nan")
    time.sleep(10)   # the last callbacks
    m = metrics(http_port)
    recs = records(http_port)
    get = lambda name: sum(v for k, v in m.items() if k.split("{")[0] == name)
    queued, stored = get("edgesnap_snapshots_queued_total"), get("edgesnap_snapshots_stored_total")
    spooled, skipped = get("edgesnap_snapshots_spooled_total"), get("edgesnap_snapshots_skipped_total")
    missed = get("edgesnap_snapshots_missed_total")
    result = dict(streams=args.streams, seconds=total, outage=args.outage, captured=queued, stored=stored,
                  records=len(recs), spooled=spooled, skipped=skipped, missed=missed,
                  lost=queued - len(recs) - skipped, spool_peak_bytes=get("edgesnap_spool_peak_bytes"),
                  spool_peak_entries=peak_entries, drain_seconds=round(drained, 1),
                  callbacks_posted=Receiver.posts, callbacks_acked_unique=len(Receiver.ids),
                  records_told=sum(1 for r in recs if r["id"] in Receiver.ids),
                  readyz_during_outage=down)
    host.terminate(); host.wait(60); moto.kill(); load.kill()
    print(json.dumps(result, indent=1))
    open(os.path.join(args.out, "reliability.jsonl"), "a").write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
