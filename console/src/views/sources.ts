// Pull sources: RTSP cameras, SRT feeds and HLS playlists the host
// connects to itself, with what each is doing (live, backing off and why);
// add one (the API's refusals shown next to their field) or delete one.

import { call, enc } from "../api";
import { clearErrors, field, h, labelColumns, showError, timeEl, toast } from "../ui";

interface Source {
  app: string;
  stream: string;
  url: string;
  mode: string;
  transport: string | null;
  credentials: boolean;
  warmup_keyframes: number;
  origin: string;
  state: string;
  last_error: string | null;
  retry_time: string | null;
  connects: number;
  failures: number;
  captures: number;
}

const REFRESH_MS = 3000;

export async function sourcesPage(main: HTMLElement, domain: string): Promise<() => void> {
  const base = `/v1/domains/${enc(domain)}/sources`;
  const list = h("div");
  const mode = h("select", { id: "f-mode", name: "mode" }, h("option", { value: "persistent" }, "Persistent"), h("option", { value: "on-demand" }, "On demand"));
  const transport = h("select", { id: "f-transport", name: "transport" }, h("option", { value: "" }, "—"), h("option", { value: "tcp" }, "TCP"), h("option", { value: "udp" }, "UDP"));
  const form = h(
    "form",
    { class: "panel", "aria-label": "Add a source", id: "source-form", novalidate: true },
    h("h2", {}, "Add a source"),
    h(
      "div",
      { class: "row" },
      field("URL (rtsp://, srt://, https://….m3u8)", "url", { size: 40, required: true }),
      field("App", "app", { required: true, value: "cams" }),
      field("Stream", "stream", { required: true }),
    ),
    h(
      "div",
      { class: "row" },
      h("label", { for: "f-mode" }, "Mode", mode),
      h("label", { for: "f-transport" }, "RTSP transport", transport, h("span", { id: "f-transport-err", class: "field-error" })),
      field("Credentials variable (user:password)", "credentials_env", { autocomplete: "off" }),
      field("Warm-up keyframes", "warmup_keyframes", { type: "number", value: 0, min: 0, max: 10 }),
    ),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Add")),
  );
  form.onsubmit = async (e) => {
    e.preventDefault();
    clearErrors(form);
    const v = (n: string) => (form.querySelector(`[name="${n}"]`) as HTMLInputElement).value.trim();
    const body: Record<string, unknown> = { url: v("url"), app: v("app"), stream: v("stream"), mode: mode.value };
    if (transport.value) body.transport = transport.value;
    if (v("credentials_env")) body.credentials_env = v("credentials_env");
    if (Number(v("warmup_keyframes"))) body.warmup_keyframes = Number(v("warmup_keyframes"));
    try {
      await call("POST", base, body);
      toast(`Source ${body.app}/${body.stream} added`);
      await load();
    } catch (x: any) {
      showError(form, x.code ?? "", String(x.message));
    }
  };

  const load = async () => {
    const r = await call<{ sources: Source[] }>("GET", base);
    list.replaceChildren(
      r.sources.length === 0
        ? h("p", { class: "muted" }, "No source. Cameras and feeds that nobody pushes are pulled from here.")
        : labelColumns(h(
            "table",
            { class: "responsive", id: "sources" },
            h("thead", {}, h("tr", {}, ...["Stream", "URL", "Mode", "State", "Captures", "Last error", ""].map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              {},
              ...r.sources.map((s) => {
                const key = `${s.app}/${s.stream}`;
                const del = h("button", { type: "button", class: "quiet danger", "aria-label": `Delete ${key}` }, "Delete");
                del.onclick = async () => {
                  if (!confirm(`Delete the source of ${key}?`)) return;
                  try {
                    await call("DELETE", `${base}/${enc(s.app)}/${enc(s.stream)}`);
                    toast(`Source ${key} deleted`);
                    await load();
                  } catch (x: any) {
                    toast(String(x.message), true);
                  }
                };
                const state = h("span", { class: `state ${s.state === "live" ? "good" : s.state === "backoff" ? "bad" : "muted"}` }, s.state);
                const retry = s.retry_time ? h("span", { class: "muted" }, " retry ", timeEl(Date.parse(s.retry_time))) : "";
                return h(
                  "tr",
                  { "data-source": key },
                  h("td", {}, key),
                  h("td", {}, h("code", {}, s.url), s.credentials ? h("span", { class: "muted" }, " (credentials)") : ""),
                  h("td", {}, `${s.mode}${s.transport ? ` · ${s.transport}` : ""}`),
                  h("td", {}, state, retry),
                  h("td", {}, String(s.captures)),
                  h("td", { class: "bad" }, s.last_error ?? ""),
                  h("td", {}, s.origin === "api" ? del : h("span", { class: "muted" }, "config file")),
                );
              }),
            ),
          )),
    );
  };
  main.append(form, h("h2", {}, "Sources"), list);
  await load();
  const timer = window.setInterval(() => void load().catch(() => {}), REFRESH_MS);
  return () => clearInterval(timer);
}
