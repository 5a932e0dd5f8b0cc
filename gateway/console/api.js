// The gateway's JSON routes, called with the key kept in this tab's sessionStorage (a bearer header: never a
// URL or a cookie).

const KEY = "audience-gateway.key";

export const key = {
  get: () => sessionStorage.getItem(KEY),
  set: value => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

function headers(extra = {}) {
  const secret = key.get();
  return secret ? {Authorization: `Bearer ${secret}`, ...extra} : extra;
}

/** A raw fetch with the key: the Response (for CSV, streams and downloads). Throws ApiError on 4xx/5xx. */
export async function request(method, path, body) {
  const init = {method, headers: headers(), credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer"};
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    let payload = null;
    try { payload = await response.json(); } catch { /* not JSON */ }
    const error = payload && payload.error ? payload.error : {};
    throw new ApiError(response.status, error.code || `http_${response.status}`,
                       error.message || `${method} ${path}: HTTP ${response.status}`, payload);
  }
  return response;
}

/** A JSON route: its ``result``. */
export async function api(method, path, body) {
  const response = await request(method, path, body);
  const payload = await response.json();
  return payload.result !== undefined ? payload.result : payload;
}

export const get = path => api("GET", path);

/** The key's endpoint and scope (/api/whoami answers any valid key). */
export const whoami = () => get("/api/whoami");

const SCOPES = ["read", "write", "admin"];
export const allows = (scope, needed) => SCOPES.indexOf(scope) >= SCOPES.indexOf(needed);

/** Download a route's answer as a file (the bearer header rules out a plain link). */
export async function download(path, fallbackName) {
  const response = await request("GET", path);
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(disposition);
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = match ? match[1] : fallbackName;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

export const q = encodeURIComponent;
