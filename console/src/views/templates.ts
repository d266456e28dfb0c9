// Snapshot settings: a domain's templates (paged), add, edit, delete, with
// the API's validation messages shown next to the field they name.

import { call, enc, Template } from "../api";
import { clearErrors, field, h, labelColumns, showError, toast } from "../ui";

const PAGE_SIZE = 10;

export async function templatesPage(main: HTMLElement, domain: string): Promise<void> {
  const base = `/v1/domains/${enc(domain)}`;
  const d = await call<{ storage: Record<string, unknown> }>("GET", base);
  const targets = Object.keys(d.storage ?? {});
  const list = h("div");
  const pager = h("div", { class: "row" });
  let page = 1;

  const form = h("form", { class: "panel", "aria-label": "Snapshot template", id: "template-form", novalidate: true });
  const render = (t: Template | null) => {
    const storage = h("select", { id: "f-storage", name: "storage", "aria-describedby": "f-storage-err" }, ...targets.map((n) => h("option", { value: n }, n)));
    if (t) storage.value = t.storage;
    const format = h("select", { id: "f-format", name: "format", "aria-describedby": "f-format-err" }, h("option", { value: "jpg" }, "JPG"), h("option", { value: "webp" }, "WebP"));
    format.value = t?.format ?? "jpg";
    const cancel = h("button", { type: "button", class: "quiet" }, "Cancel");
    cancel.onclick = () => render(null);
    form.replaceChildren(
      h("h2", {}, t ? `Edit ${t.app_name}` : "Add a template"),
      h(
        "div",
        { class: "row" },
        field("App name", "app_name", { value: t?.app_name ?? "", required: true, readonly: t ? true : null }),
        field("Interval (s, 5–3600)", "time_interval", { type: "number", value: t?.time_interval ?? 5, required: true }),
        h("label", { for: "f-storage" }, "Storage", storage, h("span", { id: "f-storage-err", class: "field-error" })),
      ),
      h(
        "div",
        { class: "row" },
        // A new template starts with the reference's usual names; both may be edited or cleared (not both).
        field("Overwrite object", "overwrite_object", { value: t ? (t.overwrite_object ?? "") : "{AppName}/{StreamName}.jpg", size: 34 }),
        field("Sequence object", "sequence_object", { value: t ? (t.sequence_object ?? "") : "{AppName}/{StreamName}/{UnixTimestamp}.jpg", size: 40 }),
        field("Callback URL", "callback", { value: t?.callback ?? "", type: "url", size: 30 }),
      ),
      h(
        "div",
        { class: "row" },
        field("Width (0: source)", "width", { type: "number", value: t?.width ?? 0, min: 0, max: 4096 }),
        field("Height (0: source)", "height", { type: "number", value: t?.height ?? 0, min: 0, max: 4096 }),
        h(
          "label",
          { for: "f-format" },
          "Format",
          format,
          h("span", { id: "f-format-err", class: "field-error" }),
        ),
        field("Quality (1–100)", "jpeg_quality", { type: "number", value: t?.jpeg_quality ?? 85, min: 1, max: 100 }),
        field("Storyboard (s, 0: none)", "storyboard", { type: "number", value: t?.storyboard ?? 0, min: 0, max: 86400 }),
        field("Skip blank keyframes", "skip_blank", { type: "checkbox", checked: t?.skip_blank ? true : null }),
      ),
      h("div", { class: "row" }, h("button", { type: "submit" }, t ? "Save" : "Add"), t ? cancel : null),
    );
    form.onsubmit = async (e) => {
      e.preventDefault();
      clearErrors(form);
      const v = (n: string) => (form.querySelector(`[name="${n}"]`) as HTMLInputElement).value.trim();
      const body: Record<string, unknown> = {
        time_interval: Number(v("time_interval")),
        storage: v("storage"),
        overwrite_object: v("overwrite_object") || null,
        sequence_object: v("sequence_object") || null,
        callback: v("callback") || null,
        width: Number(v("width")),
        height: Number(v("height")),
        format: v("format"),
        jpeg_quality: Number(v("jpeg_quality")),
        storyboard: Number(v("storyboard")),
        skip_blank: (form.querySelector('[name="skip_blank"]') as HTMLInputElement).checked,
      };
      try {
        if (t) {
          await call("PATCH", `${base}/snapshot-configs/${enc(t.app_name)}`, body);
          toast(`Template ${t.app_name} saved`);
        } else {
          for (const k of Object.keys(body)) if (body[k] === null) delete body[k];
          await call("POST", `${base}/snapshot-configs`, { app_name: v("app_name"), ...body });
          toast(`Template ${v("app_name")} added`);
        }
        render(null);
        await load();
      } catch (x: any) {
        showError(form, x.code ?? "", String(x.message));
      }
    };
  };

  const load = async () => {
    const r = await call<{ snapshot_configs: Template[]; pages: number; total: number }>("GET", `${base}/snapshot-configs?page=${page}&page_size=${PAGE_SIZE}`);
    const rows = r.snapshot_configs.map((t) => {
      const edit = h("button", { type: "button", class: "quiet", "aria-label": `Edit ${t.app_name}` }, "Edit");
      edit.onclick = () => {
        render(t);
        (form.querySelector('[name="time_interval"]') as HTMLInputElement).focus();
      };
      const del = h("button", { type: "button", class: "danger", "aria-label": `Delete ${t.app_name}` }, "Delete");
      del.onclick = async () => {
        if (!confirm(`Delete the template of ${t.app_name}?`)) return;
        try {
          await call("DELETE", `${base}/snapshot-configs/${enc(t.app_name)}`);
          toast(`Template ${t.app_name} deleted`);
          await load();
        } catch (x: any) {
          toast(String(x.message), true);
        }
      };
      const file = t.origin === "file";
      return h(
        "tr",
        { "data-app": t.app_name },
        h("td", {}, h("strong", {}, t.app_name)),
        h("td", {}, `${t.time_interval} s`),
        h("td", {}, t.storage),
        h("td", {}, h("code", {}, t.overwrite_object ?? "—")),
        h("td", {}, h("code", {}, t.sequence_object ?? "—")),
        h("td", {}, `${t.format.toUpperCase()} ${t.width || t.height ? `${t.width || "auto"}×${t.height || "auto"}` : "source size"}`),
        h("td", {}, t.skip_blank ? "skipped" : "kept"),
        h("td", {}, file ? h("span", { class: "muted" }, "config file") : h("span", { class: "row" }, edit, del)),
      );
    });
    list.replaceChildren(
      labelColumns(h(
        "table",
        { class: "responsive", id: "templates" },
        h("thead", {}, h("tr", {}, ...["App", "Interval", "Storage", "Overwrite object", "Sequence object", "Picture", "Blank keyframes", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, ...rows),
      )),
    );
    const prev = h("button", { type: "button", class: "quiet", disabled: page <= 1 }, "Previous");
    const next = h("button", { type: "button", class: "quiet", disabled: page >= r.pages }, "Next");
    prev.onclick = () => void ((page -= 1), load());
    next.onclick = () => void ((page += 1), load());
    pager.replaceChildren(prev, h("span", { class: "muted" }, `Page ${page} of ${Math.max(r.pages, 1)} (${r.total})`), next);
  };

  render(null);
  main.append(list, pager, form);
  await load();
}
