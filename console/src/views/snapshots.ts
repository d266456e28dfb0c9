// Snapshot management: pick app, stream and time range; a grid of
// thumbnails in time order that loads more as you scroll; preview with
// metadata and a copy-URL button; select and batch-delete up to 200.

import { call, enc, Snapshot, Template } from "../api";
import { clearErrors, h, labelColumns, showError, timeEl, toast } from "../ui";

const PRESETS: [string, number][] = [
  ["Last hour", 3600e3],
  ["Last 6 hours", 6 * 3600e3],
  ["Last 24 hours", 24 * 3600e3],
  ["Last 7 days", 7 * 24 * 3600e3],
  ["Custom", 0],
];
const MAX_DELETE = 200;

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export async function snapshotsPage(main: HTMLElement, domain: string): Promise<() => void> {
  const base = `/v1/domains/${enc(domain)}`;
  const templates = await call<{ snapshot_configs: Template[] }>("GET", `${base}/snapshot-configs?page_size=30`);
  const apps = templates.snapshot_configs.map((t) => t.app_name).filter((a) => a !== "*");
  const app = h("input", { id: "f-app", name: "app", list: "apps", value: apps[0] ?? "live", required: true });
  const stream = h("input", { id: "f-stream", name: "stream", list: "streams", placeholder: "all streams", autocomplete: "off" });
  const streams = h("datalist", { id: "streams" });
  const preset = h("select", { id: "f-range", name: "range" }, ...PRESETS.map(([label], i) => h("option", { value: String(i) }, label)));
  const start = h("input", { id: "f-start", name: "start_time", type: "datetime-local" });
  const end = h("input", { id: "f-end", name: "end_time", type: "datetime-local" });
  const order = h("select", { id: "f-order", name: "order" }, h("option", { value: "desc" }, "Newest first"), h("option", { value: "asc" }, "Oldest first"));
  const custom = h("span", { class: "row", hidden: true }, h("label", { for: "f-start" }, "From", start), h("label", { for: "f-end" }, "To", end));
  preset.onchange = () => (custom.hidden = preset.value !== String(PRESETS.length - 1));
  const form = h(
    "form",
    { class: "panel row", "aria-label": "Find snapshots" },
    h("label", { for: "f-app" }, "App", app, h("span", { id: "f-app-err", class: "field-error" })),
    h("datalist", { id: "apps" }, ...apps.map((a) => h("option", { value: a }))),
    h("label", { for: "f-stream" }, "Stream", stream),
    streams,
    h("label", { for: "f-range" }, "Time range", preset),
    custom,
    h("label", { for: "f-order" }, "Order", order),
    h("button", { type: "submit" }, "Show"),
  );
  let suggest = 0;
  stream.addEventListener("input", () => {
    clearTimeout(suggest);
    suggest = window.setTimeout(async () => {
      const r = await call<{ streams: string[] }>("GET", `${base}/stream-names?app=${enc(app.value)}&prefix=${enc(stream.value)}&limit=20`).catch(() => ({ streams: [] }));
      streams.replaceChildren(...r.streams.map((s) => h("option", { value: s })));
    }, 150);
  });

  const selectAll = h("input", { type: "checkbox", id: "select-all" });
  // Off by default, as in the API and the CLI: deleting a record keeps its file unless asked.
  const removeFiles = h("input", { type: "checkbox", id: "remove-files" });
  const count = h("span", { class: "muted", "aria-live": "polite" }, "");
  const del = h("button", { type: "button", class: "danger", disabled: true }, "Delete selected");
  const results = h("div", { "aria-live": "polite" });
  const toolbar = h(
    "div",
    { class: "row panel" },
    h("label", { for: "select-all", class: "inline" }, h("span", {}, "Select all shown"), selectAll),
    h("label", { for: "remove-files" }, h("span", {}, "Also remove files"), removeFiles),
    del,
    count,
  );
  const grid = h("div", { class: "grid", role: "list", "aria-label": "Snapshots" });
  const sentinel = h("div", { class: "sentinel" });
  const more = h("button", { type: "button", class: "quiet", hidden: true }, "Load more");
  const dialog = h("dialog", { "aria-label": "Snapshot" });
  main.append(form, toolbar, results, grid, more, sentinel, dialog);

  const selected = new Set<string>();
  let next: { start: string; token: string } | null = null;
  let loading = false;
  let query = "";
  let firstStart = "";

  const updateSelection = () => {
    count.textContent = selected.size ? `${selected.size} selected` : "";
    del.disabled = selected.size === 0 || selected.size > MAX_DELETE;
    if (selected.size > MAX_DELETE) count.textContent += ` (at most ${MAX_DELETE} at once)`;
  };

  const open = (s: Snapshot) => {
    const copy = h("button", { type: "button" }, "Copy URL");
    copy.onclick = async () => {
      try {
        await navigator.clipboard.writeText(s.url);
        toast("URL copied");
      } catch {
        toast(s.url);
      }
    };
    const close = h("button", { type: "button", class: "quiet" }, "Close");
    close.onclick = () => dialog.close();
    const meta: [string, string | Node][] = [
      ["Stream", `${s.app}/${s.stream}`],
      ["Time", timeEl(s.create_timestamp, true)],
      ["Object", s.object],
      ["Mode", s.is_overlay ? "overwrite" : "sequential"],
      ["Size", `${s.width}×${s.height}, ${(s.size / 1024).toFixed(1)} KiB`],
      ["Sequence", String(s.sequence)],
      ["Storage", `${s.storage} (${s.endpoint}${s.bucket ? " " + s.bucket : ""})`],
      ["Id", s.id],
    ];
    dialog.replaceChildren(
      h("img", { src: s.url, alt: `Snapshot of ${s.app}/${s.stream} at ${s.create_time}` }),
      h("div", { class: "body" }, h("dl", {}, ...meta.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])), h("div", { class: "row" }, copy, close)),
    );
    dialog.showModal();
    close.focus();
  };

  const tile = (s: Snapshot) => {
    const pick = h("input", { type: "checkbox", "aria-label": `Select ${s.stream} ${s.create_time}`, "data-id": s.id });
    pick.onchange = () => {
      if (pick.checked) selected.add(s.id);
      else selected.delete(s.id);
      updateSelection();
    };
    const img = h("img", { src: s.thumb_url, alt: `${s.stream} at ${s.create_time}`, loading: "lazy", tabindex: 0 });
    img.onclick = () => open(s);
    img.onkeydown = (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        open(s);
      }
    };

    return h(
      "div",
      { class: "tile", role: "listitem", "data-id": s.id },
      h("span", { class: "pick" }, pick),
      img,
      h("div", { class: "meta" }, h("span", {}, s.stream + (s.is_overlay ? " (latest)" : ` #${s.sequence}`)), timeEl(s.create_timestamp)),
    );
  };

  const load = async () => {
    if (loading || (!next && grid.childElementCount > 0)) return;
    loading = true;
    try {
      const page = next ? `&start_time=${enc(next.start)}&next_token=${enc(next.token)}` : `&start_time=${enc(firstStart)}`;
      const r = await call<{ snapshots: Snapshot[]; next_start_time?: string; next_token?: string }>("GET", `${base}/snapshots?${query}${page}`);
      grid.append(...r.snapshots.map(tile));
      next = r.next_token && r.next_start_time ? { start: r.next_start_time, token: r.next_token } : null;
      more.hidden = !next;
      if (grid.childElementCount === 0) grid.append(h("p", { class: "muted" }, "No snapshots in this range."));
    } catch (x: any) {
      showError(form, x.code ?? "", String(x.message));
    } finally {
      loading = false;
    }
  };

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    clearErrors(form);
    const p = Number(preset.value);
    const now = Date.now();
    let from = now - PRESETS[p][1];
    let to = now + 60e3;
    if (PRESETS[p][1] === 0) {
      from = start.value ? new Date(start.value).getTime() : now - 3600e3;
      to = end.value ? new Date(end.value).getTime() : now;
    }
    const s = stream.value.trim();
    const desc = order.value === "desc" ? "&order=desc" : "";
    query = `app=${enc(app.value.trim())}${s ? `&stream=${enc(s)}` : ""}&end_time=${enc(iso(to))}&limit=60${desc}`;
    firstStart = iso(from);
    next = null;
    selected.clear();
    selectAll.checked = false;
    updateSelection();
    grid.replaceChildren();
    results.replaceChildren();
    void load();
  });
  more.onclick = () => void load();
  const observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && next) void load();
  });
  observer.observe(sentinel);

  selectAll.onchange = () => {
    grid.querySelectorAll<HTMLInputElement>("input[type=checkbox][data-id]").forEach((c) => {
      c.checked = selectAll.checked;
      if (c.checked) selected.add(c.dataset.id!);
      else selected.delete(c.dataset.id!);
    });
    updateSelection();
  };

  del.onclick = async () => {
    const ids = [...selected];
    if (!confirm(`Delete ${ids.length} snapshot(s)${removeFiles.checked ? " and their files" : ""}?`)) return;
    del.disabled = true;
    try {
      const r = await call<{ results: { id: string; status: string }[]; files_removed: number }>("POST", `${base}/snapshots/delete`, { ids, remove_file: removeFiles.checked });
      const rows = r.results.map((x) => h("tr", {}, h("td", {}, h("code", {}, x.id)), h("td", { class: x.status === "OK" ? "good" : "bad" }, x.status)));
      results.replaceChildren(
        h("section", { class: "panel" }, h("h2", {}, `Deleted ${r.results.filter((x) => x.status === "OK").length} of ${ids.length}; ${r.files_removed} file(s) removed`),
          labelColumns(h("table", { class: "responsive", id: "delete-results" }, h("thead", {}, h("tr", {}, h("th", {}, "Snapshot"), h("th", {}, "Result"))), h("tbody", {}, ...rows)))),
      );
      for (const x of r.results) if (x.status === "OK") grid.querySelector(`.tile[data-id="${x.id}"]`)?.remove();
      selected.clear();
      selectAll.checked = false;
      updateSelection();
    } catch (x: any) {
      toast(String(x.message), true);
      updateSelection();
    }
  };

  form.requestSubmit();
  return () => observer.disconnect();
}
