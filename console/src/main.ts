// The console's shell: sign-in, the domain picker, and a hash router over the pages.

import { ApiError, call, setToken, token } from "./api";
import { h, refreshTimes, setZone, toast, zone } from "./ui";
import { notifyPage } from "./views/notify";
import { pluginsPage } from "./views/plugins";
import { snapshotsPage } from "./views/snapshots";
import { sourcesPage } from "./views/sources";
import { templatesPage } from "./views/templates";
import { wallPage } from "./views/wall";

export interface Page {
  /** Renders into `main` for `domain`; returns a cleanup (timers) if any. */
  (main: HTMLElement, domain: string): Promise<(() => void) | void>;
}

const pages: Record<string, [string, Page]> = {
  snapshots: ["Snapshots", snapshotsPage],
  wall: ["Live wall", wallPage],
  sources: ["Sources", sourcesPage],
  templates: ["Snapshot settings", templatesPage],
  plugins: ["Plugins", pluginsPage],
  notify: ["Notify", notifyPage],
};

const DOMAIN_KEY = "edgesnap.domain";
let cleanup: (() => void) | void;

async function signIn(main: HTMLElement): Promise<void> {
  document.getElementById("top")!.hidden = true;
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "current-password", required: true });
  const err = h("p", { class: "field-error", id: "token-err", role: "alert" });
  input.setAttribute("aria-describedby", "token-err");
  const form = h(
    "form",
    { class: "panel signin" },
    h("h1", {}, "Sign in to edgesnap"),
    h("p", { class: "muted" }, "Use the operator token or a domain token."),
    h("label", { for: "token" }, "Access token", input),
    err,
    h("div", { class: "row" }, h("button", { type: "submit" }, "Sign in")),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    try {
      await call("GET", "/v1/whoami");
      await start();
    } catch (x) {
      setToken(null);
      err.textContent = x instanceof ApiError && x.status === 401 ? "This token is not valid." : String((x as Error).message);
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  });
  main.replaceChildren(form);
  input.focus();
}

async function start(): Promise<void> {
  const main = document.getElementById("main")!;
  if (!token()) return signIn(main);
  let me: { role: string; domains: string[] };
  try {
    me = await call("GET", "/v1/whoami");
  } catch {
    setToken(null);
    return signIn(main);
  }
  const picker = document.getElementById("domain") as HTMLSelectElement;
  picker.replaceChildren(...me.domains.map((d) => h("option", { value: d }, d)));
  const saved = sessionStorage.getItem(DOMAIN_KEY);
  if (saved && me.domains.includes(saved)) picker.value = saved;
  picker.onchange = () => {
    sessionStorage.setItem(DOMAIN_KEY, picker.value);
    void route();
  };
  // One time zone on every page, the browser's or UTC; switching re-renders every time shown, in place.
  const zonePicker = document.getElementById("zone") as HTMLSelectElement;
  zonePicker.value = zone();
  zonePicker.onchange = () => {
    setZone(zonePicker.value === "utc" ? "utc" : "local");
    refreshTimes();
  };
  document.getElementById("top")!.hidden = false;
  document.getElementById("signout")!.onclick = () => {
    if (cleanup) cleanup();
    cleanup = undefined;
    setToken(null);
    location.hash = "";
    void signIn(main);
  };
  if (me.domains.length === 0) {
    main.replaceChildren(h("p", {}, "This token sees no domain."));
    return;
  }
  window.onhashchange = () => void route();
  await route();
}

async function route(): Promise<void> {
  const main = document.getElementById("main")!;
  const name = location.hash.replace(/^#\//, "") || "snapshots";
  const [title, page] = pages[name] ?? pages.snapshots;
  document.title = `${title} · edgesnap`;
  document.querySelectorAll("header nav a").forEach((a) => {
    if (a.getAttribute("href") === `#/${name}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  if (cleanup) cleanup();
  cleanup = undefined;
  const domain = (document.getElementById("domain") as HTMLSelectElement).value;
  main.replaceChildren(h("h1", {}, title));
  try {
    cleanup = await page(main, domain);
  } catch (x) {
    toast(String((x as Error).message), true);
  }
}

void start();
