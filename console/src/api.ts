// The management API, with the signed-in token. Every call goes through
// here; the console has no other way in.

const TOKEN_KEY = "edgesnap.token";

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

export function token(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

export function setToken(t: string | null): void {
  if (t === null) sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, t);
}

/** One request; the JSON answer, or an ApiError with the API's code and message. */
export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Authorization: `Bearer ${token()}` };
  let payload: BodyInit | undefined;
  if (body instanceof Blob) {
    payload = body;
    headers["Content-Type"] = "application/wasm";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  const r = await fetch(path, { method, headers, body: payload });
  const text = await r.text();
  let data: any = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!r.ok) throw new ApiError(r.status, data?.code ?? "Error", data?.message ?? `${r.status} ${r.statusText}`);
  return data as T;
}

export const enc = encodeURIComponent;

export interface Snapshot {
  id: string;
  app: string;
  stream: string;
  create_time: string;
  create_timestamp: number;
  object: string;
  is_overlay: boolean;
  size: number;
  width: number;
  height: number;
  sequence: number;
  url: string;
  thumb_url: string;
  storage: string;
  endpoint: string;
  bucket: string;
}

export interface Template {
  app_name: string;
  time_interval: number;
  storage: string;
  overwrite_object: string | null;
  sequence_object: string | null;
  callback: string | null;
  jpeg_quality: number;
  width: number;
  height: number;
  format: "jpg" | "webp";
  skip_blank: boolean;
  storyboard: number;
  origin: string;
}

export interface LiveStream {
  app: string;
  stream: string;
  width: number | null;
  height: number | null;
  last_snapshot_time: string | null;
  time_interval: number | null;
  snapshots: number;
  latest: Snapshot | null;
  peer: string | null;
  bitrate_bps: number;
  fps: number;
  gop_ms: number;
  last_keyframe_age_ms: number | null;
  /** The pull source feeding it (null for a push). */
  source: { url: string; state: string } | null;
}
