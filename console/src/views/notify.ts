// Notify settings (the domain's callback URL and signing key) and the
// callbacks given up on, with replay.

import { call, enc } from "../api";
import { clearErrors, field, h, labelColumns, showError, timeEl, toast } from "../ui";

interface Failed {
  id: string;
  event: string;
  record_id: string;
  url: string;
  attempts: number;
  last_error: string | null;
  created_time: string;
}

export async function notifyPage(main: HTMLElement, domain: string): Promise<void> {
  const base = `/v1/domains/${enc(domain)}/notify`;
  // The domain's view carries its notify settings (null when unset), so an unset one is not a 404.
  const d = await call<{ notify: { notify_url: string; notify_req_auth: string; notify_auth_key_set: boolean } | null }>("GET", `/v1/domains/${enc(domain)}`);
  const current = d.notify;
  const auth = h("select", { id: "f-notify_req_auth", name: "notify_req_auth" }, h("option", { value: "no" }, "No"), h("option", { value: "yes" }, "Yes"));
  auth.value = current?.notify_req_auth ?? "no";
  const remove = h("button", { type: "button", class: "danger", disabled: !current }, "Remove");
  const form = h(
    "form",
    { class: "panel", "aria-label": "Notify settings", novalidate: true },
    h(
      "div",
      { class: "row" },
      field("Notify URL", "notify_url", { type: "url", value: current?.notify_url ?? "", size: 40, required: true }),
      h("label", { for: "f-notify_req_auth" }, "Signed requests", auth),
      field(current?.notify_auth_key_set ? "Signing key (set; leave empty to keep)" : "Signing key (16–32 letters or digits)", "notify_auth_key", { type: "password", autocomplete: "off" }),
    ),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Save"), remove),
  );
  form.onsubmit = async (e) => {
    e.preventDefault();
    clearErrors(form);
    const v = (n: string) => (form.querySelector(`[name="${n}"]`) as HTMLInputElement).value.trim();
    const body: Record<string, string> = { notify_url: v("notify_url"), notify_req_auth: auth.value };
    if (v("notify_auth_key")) body.notify_auth_key = v("notify_auth_key");
    try {
      await call("PUT", base, body);
      toast("Notify settings saved");
      remove.disabled = false;
    } catch (x: any) {
      showError(form, x.code ?? "", String(x.message));
    }
  };
  remove.onclick = async () => {
    if (!confirm("Remove the notify settings?")) return;
    await call("DELETE", base).catch((x) => toast(String(x.message), true));
    toast("Notify settings removed");
  };

  const failed = h("div");
  const load = async () => {
    const r = await call<{ failed: Failed[] }>("GET", `${base}/failed`);
    const all = h("button", { type: "button", disabled: r.failed.length === 0 }, "Replay all");
    all.onclick = () => void replay(undefined);
    failed.replaceChildren(
      h("div", { class: "row" }, h("span", { class: "muted" }, `${r.failed.length} failed deliveries`), all),
      r.failed.length === 0
        ? ""
        : labelColumns(h(
            "table",
            { class: "responsive", id: "failed" },
            h("thead", {}, h("tr", {}, ...["Created", "Event", "URL", "Attempts", "Last error", ""].map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              {},
              ...r.failed.map((f) => {
                const one = h("button", { type: "button", class: "quiet" }, "Replay");
                one.onclick = () => void replay([f.id]);
                return h("tr", {}, h("td", {}, timeEl(Date.parse(f.created_time))), h("td", {}, f.event), h("td", {}, h("code", {}, f.url)), h("td", {}, String(f.attempts)), h("td", { class: "bad" }, f.last_error ?? ""), h("td", {}, one));
              }),
            ),
          )),
    );
  };
  const replay = async (ids?: string[]) => {
    try {
      const r = await call<{ replayed: number }>("POST", `${base}/failed/replay`, ids ? { ids } : {});
      toast(`${r.replayed} delivery(ies) queued again`);
      await load();
    } catch (x: any) {
      toast(String(x.message), true);
    }
  };
  main.append(form, h("h2", {}, "Failed deliveries"), failed);
  await load();
}
