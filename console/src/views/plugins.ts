// Plugins: upload a component (drag and drop or a file picker), versions
// with their contract version and conformance figures, activate / roll back, recent runs.

import { call, enc } from "../api";
import { h, labelColumns, timeEl, toast } from "../ui";

interface Version {
  version: string;
  size: number;
  uploaded_time: string;
  contract: string;
  conformance: { fuel: number; peak_memory_bytes: number };
  active: boolean;
  demoted: { time: string; reason: string } | null;
}

interface Run {
  time: string;
  version: string;
  call: string;
  app: string;
  stream: string;
  outcome: string;
  error: string | null;
  fuel: number | null;
  duration_ms: number;
  fell_back: boolean;
}

export async function pluginsPage(main: HTMLElement, domain: string): Promise<void> {
  const base = `/v1/domains/${enc(domain)}/plugins`;
  const input = h("input", { type: "file", id: "plugin-file", accept: ".wasm,application/wasm" });
  const drop = h("div", { class: "drop", id: "drop" }, "Drop a policy component (.wasm) here, or ", h("label", { for: "plugin-file" }, "choose a file", input));
  const status = h("p", { "aria-live": "polite", id: "upload-status" });
  const versions = h("div");
  const runs = h("div");
  main.append(h("section", { class: "panel" }, h("h2", {}, "Upload"), drop, status), h("h2", {}, "Versions"), versions, h("h2", {}, "Recent runs"), runs);

  const upload = async (file: File) => {
    status.textContent = `Uploading ${file.name}…`;
    try {
      const v = await call<Version>("POST", base, file);
      status.textContent = `Accepted ${v.version.slice(0, 12)}: conformance used ${v.conformance.fuel} fuel, ${(v.conformance.peak_memory_bytes / 1024).toFixed(0)} KiB.`;
      await load();
    } catch (x: any) {
      status.textContent = `Refused: ${x.message}`;
      status.className = "bad";
    }
  };
  input.onchange = () => input.files?.[0] && void upload(input.files[0]);
  drop.ondragover = (e) => {
    e.preventDefault();
    drop.classList.add("over");
  };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const f = e.dataTransfer?.files?.[0];
    if (f) void upload(f);
  };

  const activate = async (version: string) => {
    try {
      await call("POST", `${base}/${enc(version)}/activate`);
      toast(version === "default" ? "The default policy is active" : `Version ${version.slice(0, 12)} is active`);
      await load();
    } catch (x: any) {
      toast(String(x.message), true);
    }
  };

  const load = async () => {
    const r = await call<{ active: string; previous: string; versions: Version[] }>("GET", base);
    const rows = r.versions.map((v) => {
      const back = v.version === r.previous;
      const act = h("button", { type: "button", "aria-label": `${back ? "Roll back to" : "Activate"} ${v.version.slice(0, 12)}` }, back ? "Roll back to this" : "Activate");
      act.onclick = () => void activate(v.version);
      const del = h("button", { type: "button", class: "danger", "aria-label": `Delete ${v.version.slice(0, 12)}` }, "Delete");
      del.onclick = async () => {
        try {
          await call("DELETE", `${base}/${enc(v.version)}`);
          await load();
        } catch (x: any) {
          toast(String(x.message), true);
        }
      };
      return h(
        "tr",
        { "data-version": v.version },
        h("td", {}, h("code", { title: v.version }, v.version.slice(0, 12)), v.active ? h("strong", { class: "good" }, " active") : "", v.version === r.previous ? h("span", { class: "muted" }, " previous") : ""),
        h("td", {}, `${(v.size / 1024).toFixed(0)} KiB`),
        h("td", {}, timeEl(Date.parse(v.uploaded_time))),
        h("td", { class: "contract" }, v.contract),
        h("td", {}, `${v.conformance.fuel} fuel, ${(v.conformance.peak_memory_bytes / 1024).toFixed(0)} KiB`),
        h("td", {}, v.demoted ? h("span", { class: "bad" }, "demoted ", timeEl(Date.parse(v.demoted.time)), `: ${v.demoted.reason}`) : "—"),
        h("td", {}, v.active ? "" : h("span", { class: "row" }, act, del)),
      );
    });
    const useDefault = h("button", { type: "button", class: "quiet", disabled: r.active === "default" }, "Use the default policy");
    useDefault.onclick = () => void activate("default");
    versions.replaceChildren(
      h("p", {}, "Active: ", h("code", { id: "active-version" }, r.active === "default" ? "default" : r.active.slice(0, 12)), " ", useDefault),
      labelColumns(h(
        "table",
        { class: "responsive", id: "versions" },
        h("thead", {}, h("tr", {}, ...["Version", "Size", "Uploaded", "Contract", "Conformance", "Last demotion", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, ...rows),
      )),
    );
    const rr = await call<{ runs: Run[] }>("GET", `${base}/runs`);
    runs.replaceChildren(
      rr.runs.length === 0
        ? h("p", { class: "muted" }, "No runs yet.")
        : labelColumns(h(
            "table",
            { class: "responsive", id: "runs" },
            h("thead", {}, h("tr", {}, ...["Time", "Version", "Call", "Stream", "Outcome", "Fuel", "ms"].map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              {},
              ...rr.runs.slice(0, 50).map((x) =>
                h(
                  "tr",
                  {},
                  h("td", {}, timeEl(Date.parse(x.time))),
                  h("td", {}, h("code", {}, x.version.slice(0, 12))),
                  h("td", {}, x.call),
                  h("td", {}, `${x.app}/${x.stream}`),
                  h("td", { class: x.error ? "bad" : "good" }, x.error ? `${x.outcome}: ${x.error}` : x.outcome),
                  h("td", {}, x.fuel === null ? "—" : String(x.fuel)),
                  h("td", {}, x.duration_ms.toFixed(2)),
                ),
              ),
            ),
          )),
    );
  };
  await load();
}
