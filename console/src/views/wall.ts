// The live wall: a tile per live stream with its latest snapshot, refreshed
// as new ones arrive; stale tiles stand out; "snapshot now" per tile.

import { call, enc, LiveStream } from "../api";
import { age, h, toast } from "../ui";

const REFRESH_MS = 3000;

export async function wallPage(main: HTMLElement, domain: string): Promise<() => void> {
  const base = `/v1/domains/${enc(domain)}`;
  const grid = h("div", { class: "grid", role: "list", "aria-label": "Live streams", id: "wall" });
  const summary = h("p", { class: "muted", "aria-live": "polite" });
  main.append(summary, grid);
  const tiles = new Map<string, { el: HTMLElement; img: HTMLImageElement; info: HTMLElement; health: HTMLElement; shown: number }>();

  const tileFor = (s: LiveStream) => {
    const key = `${s.app}/${s.stream}`;
    let t = tiles.get(key);
    if (!t) {
      const img = h("img", { alt: `Latest snapshot of ${key}` });
      img.onclick = () => s.latest && window.open(s.latest.url, "_blank", "noopener");
      const now = h("button", { type: "button", class: "quiet" }, "Snapshot now");
      now.onclick = async () => {
        now.disabled = true;
        try {
          await call("POST", `${base}/streams/${enc(s.app)}/${enc(s.stream)}/snapshot`);
          toast(`Snapshot of ${key} taken`);
          void refresh();
        } catch (x: any) {
          toast(String(x.message), true);
        } finally {
          now.disabled = false;
        }
      };
      const info = h("span", { class: "muted" });
      const health = h("div", { class: "meta muted health" });
      const el = h("div", { class: "tile", role: "listitem", "data-stream": key }, img, h("div", { class: "meta" }, h("strong", {}, key), info), health, h("div", { class: "meta" }, now));
      t = { el, img, info, health, shown: 0 };
      tiles.set(key, t);
      grid.append(el);
    }
    return t;
  };

  // Pull sources not live now: a tile each with what the source is doing.
  const waiting = h("div", { class: "grid", role: "list", "aria-label": "Sources not live", id: "sources-not-live" });
  main.append(waiting);

  const refresh = async () => {
    let r: { streams: LiveStream[]; sources_not_live: { app: string; stream: string; url: string; state: string; last_error: string | null }[] };
    try {
      r = await call("GET", `${base}/streams`);
    } catch (x: any) {
      summary.textContent = String(x.message);
      return;
    }
    const live = new Set<string>();
    const now = Date.now();
    let stale = 0;
    for (const s of r.streams) {
      const key = `${s.app}/${s.stream}`;
      live.add(key);
      const t = tileFor(s);
      const last = s.last_snapshot_time ? Date.parse(s.last_snapshot_time) : 0;
      const interval = (s.time_interval ?? 5) * 1000;
      const isStale = !last || now - last > 2 * interval + 2000;
      stale += Number(isStale);
      t.el.classList.toggle("stale", isStale);
      const size = s.width && s.height ? `${s.width}×${s.height}` : "no picture yet";
      t.info.replaceChildren(`${size} · ${last ? age(now - last) + " ago" : "—"}`, isStale ? h("span", { class: "badge" }, " stale") : "");
      // Stream health: what ingest measures, for telling a starved encoder from a stuck one.
      const mbps = s.bitrate_bps ? `${(s.bitrate_bps / 1e6).toFixed(1)} Mb/s` : "— Mb/s";
      const gop = s.gop_ms ? `GOP ${(s.gop_ms / 1000).toFixed(1)} s` : "GOP —";
      const keyframe = s.last_keyframe_age_ms === null ? "no keyframe yet" : `keyframe ${age(s.last_keyframe_age_ms)} ago`;
      const from = s.source ? ` · pulled from ${s.source.url}` : s.peer ? ` · from ${s.peer}` : "";
      t.health.textContent = `${mbps} · ${s.fps.toFixed(0)} fps · ${gop} · ${keyframe}${from}`;
      if (s.latest && s.latest.create_timestamp !== t.shown) {
        t.shown = s.latest.create_timestamp;
        t.img.src = s.latest.thumb_url;
        t.img.dataset.created = String(s.latest.create_timestamp);
      }
    }
    for (const [key, t] of tiles) {
      if (!live.has(key)) {
        t.el.remove();
        tiles.delete(key);
      }
    }
    waiting.replaceChildren(
      ...r.sources_not_live.map((s) =>
        h(
          "div",
          { class: "tile stale", role: "listitem", "data-source": `${s.app}/${s.stream}` },
          h("div", { class: "meta" }, h("strong", {}, `${s.app}/${s.stream}`), h("span", { class: "badge" }, ` ${s.state}`)),
          h("div", { class: "meta muted" }, `pulled from ${s.url}`),
          s.last_error ? h("div", { class: "meta bad" }, s.last_error) : "",
        ),
      ),
    );
    const sources = r.sources_not_live.length ? `; ${r.sources_not_live.length} source(s) not live` : "";
    summary.textContent = (r.streams.length ? `${r.streams.length} live stream(s)${stale ? `, ${stale} stale` : ""}` : "No stream is live.") + sources;
  };

  await refresh();
  const timer = window.setInterval(() => void refresh(), REFRESH_MS);
  return () => clearInterval(timer);
}
