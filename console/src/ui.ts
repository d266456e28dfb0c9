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
