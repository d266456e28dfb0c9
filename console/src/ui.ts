// Small DOM helpers: an element builder, toasts, field errors.

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | null | undefined>;

/** h("button", {type: "button", onclick: f}, "Save") */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v as EventListener);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

export function toast(message: string, bad = false): void {
  const t = h("div", { class: bad ? "toast bad" : "toast" }, message);
  document.getElementById("toasts")!.append(t);
  setTimeout(() => t.remove(), bad ? 8000 : 4000);
}

/** A labelled input with a slot for its error message. */
export function field(label: string, name: string, attrs: Attrs = {}): HTMLLabelElement {
  const id = `f-${name}`;
  const input = h("input", { id, name, "aria-describedby": `${id}-err`, ...attrs });
  return h("label", { for: id }, label, input, h("span", { id: `${id}-err`, class: "field-error" }));
}

/** Shows an API error next to the field it names (its code's suffix or the message's first word), else as a toast. */
export function showError(form: HTMLElement, code: string, message: string): void {
  clearErrors(form);
  const snake = (code.split(".")[1] ?? "").replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
  const first = message.split(":")[0].trim();
  for (const name of [snake, first]) {
    const input = form.querySelector<HTMLInputElement>(`[name="${name}"]`);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      const slot = form.querySelector(`#${input.id}-err`);
      if (slot) slot.textContent = message;
      input.focus();
      return;
    }
  }
  toast(message, true);
}

export function clearErrors(form: HTMLElement): void {
  form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
  form.querySelectorAll(".field-error").forEach((e) => (e.textContent = ""));
}

/** "12 s", "3 min", "2 h" */
export function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

const ZONE_KEY = "edgesnap.zone";

/** The time zone every page shows times in: the browser's ("local") or UTC. */
export function zone(): "local" | "utc" {
  return localStorage.getItem(ZONE_KEY) === "utc" ? "utc" : "local";
}

export function setZone(z: "local" | "utc"): void {
  localStorage.setItem(ZONE_KEY, z);
}

/** "2026-12-07 10:22:05 UTC" (or "… GMT+1"): one format and zone for every page, the zone always named. */
export function fmtTime(ms: number, withMs = false): string {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone: zone() === "utc" ? "UTC" : undefined,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hourCycle: "h23",
    timeZoneName: "short",
    ...(withMs ? { fractionalSecondDigits: 3 as const } : {}),
  }).formatToParts(new Date(ms));
  const get = (t: string) => parts.find((p) => p.type === t)?.value ?? "";
  const frac = withMs ? `.${get("fractionalSecond")}` : "";
  return `${get("year")}-${get("month")}-${get("day")} ${get("hour")}:${get("minute")}:${get("second")}${frac} ${get("timeZoneName")}`;
}

/** A <time> showing `ms` in the chosen zone; switching zones re-renders it in place (refreshTimes). */
export function timeEl(ms: number, withMs = false): HTMLTimeElement {
  return h("time", { datetime: new Date(ms).toISOString(), "data-ms": ms, "data-with-ms": withMs ? 1 : 0 }, fmtTime(ms, withMs));
}

/** Re-renders every timeEl on the page in the zone now chosen. */
export function refreshTimes(): void {
  document.querySelectorAll<HTMLTimeElement>("time[data-ms]").forEach((t) => {
    t.textContent = fmtTime(Number(t.dataset.ms), t.dataset.withMs === "1");
  });
}

/** Gives each cell of a responsive table its column's label, shown beside it where a phone's width hides the header row. */
export function labelColumns(table: HTMLTableElement): HTMLTableElement {
  const labels = [...table.querySelectorAll("thead th")].map((th) => th.textContent ?? "");
  table.querySelectorAll("tbody tr").forEach((tr) => [...tr.children].forEach((td, i) => labels[i] && td.setAttribute("data-label", labels[i])));
  return table;
}
