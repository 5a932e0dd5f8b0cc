// Audiences: the list (search by name) and one audience's page (attributes, a sample of members, upload
// history with its rejected rows, and the admin actions).
import {ApiError, allows, api, download, get, q, request} from "./api.js";
import {facts, h, number, parseCsv, replace, say, table, when} from "./dom.js";

const SAMPLE_ROWS = 20;
const REJECTS_SHOWN = 100;

export async function audienceList(main, session) {
  const results = h("div", {id: "audiences"});
  const search = h("input", {id: "audience-search", type: "search", placeholder: "name contains…"});
  let sequence = 0;
  const load = async () => {
    const mine = ++sequence;
    const rows = await fetchAudiences(session, search.value.trim());
    if (mine === sequence) show(rows);
  };
  const show = ({segments, next}) => {
    const columns = [
      {title: "Name", value: s => h("a", {href: `#/audiences/${s.id}`}, s.name)},
      {title: "Id", value: s => String(s.id), num: true},
      {title: "Type", value: s => s.type},
    ];
    if (allows(session.scope, "write")) columns.push(
      {title: "Status", value: s => s.status},
      {title: "Size", value: s => number(s.memberCount), num: true},
      {title: "Last upload", value: s => when(s.lastUploadAt)});
    replace(results, segments.length ? table(columns, segments, {id: "audience-table"})
                                     : h("p", {class: "muted"}, "No audience matches."),
      next ? h("button", {type: "button", onclick: async () => {
        const more = await next();
        show({segments: [...segments, ...more.segments], next: more.next});
      }}, "More") : null);
  };
  let timer = null;
  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(load, 250); });
  replace(main, h("h1", {}, "Audiences"),
    h("form", {class: "inline", role: "search", onsubmit: event => { event.preventDefault(); load(); }},
      h("label", {for: "audience-search"}, "Search"), search),
    results);
  await load();
  return () => clearTimeout(timer);
}

/** {segments, next}: /api/segments (write keys: status, size, last upload) or /v1/segments (read keys). */
async function fetchAudiences(session, text) {
  if (!allows(session.scope, "write")) {
    const result = await get("/v1/segments");
    const needle = text.toLowerCase();
    return {segments: result.list.filter(s => s.name.toLowerCase().includes(needle)), next: null};
  }
  const page = async cursor => {
    const params = new URLSearchParams({limit: "100"});
    if (text) params.set("q", text);
    if (cursor) params.set("cursor", cursor);
    const result = await get(`/api/segments?${params}`);
    return {segments: result.segments, next: result.nextCursor ? () => page(result.nextCursor) : null};
  };
  return page(null);
}

export async function audiencePage(main, session, id) {
  if (!allows(session.scope, "write")) {
    const segment = await get(`/v1/segments/${q(id)}`);
    replace(main, h("h1", {}, segment.name || `Segment ${id}`), facts(Object.entries(segment).map(
      ([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)])), await sampleSection(id));
    return;
  }
  const segment = await get(`/api/segments/${q(id)}`);
  const uploads = h("div", {id: "uploads"});
  const rejects = h("div", {id: "rejects"});
  replace(main,
    h("p", {}, h("a", {href: "#/audiences"}, "← Audiences")),
    h("h1", {id: "audience-name"}, segment.name),
    facts([["Id", String(segment.id)], ["Type", segment.type], ["Status", segment.status],
           ["Size", h("span", {id: "audience-size"}, number(segment.memberCount))],
           ["Description", segment.description || "—"], ["Identity", segment.identityAttribute || "—"],
           ["Attributes", (segment.attributes || []).join(", ") || "— (set by the first upload)"],
           ["Last upload", when(segment.lastUploadAt) || "—"], ["Updated", when(segment.updatedAt)]]),
    allows(session.scope, "admin") ? adminActions(segment) : null,
    await sampleSection(id),
    h("h2", {}, "Upload history"), uploads, rejects);
  await showUploads(uploads, rejects, id);
}

async function sampleSection(id) {
  const section = h("section", {id: "sample"}, h("h2", {}, `Members (first ${SAMPLE_ROWS})`));
  try {
    const rows = await firstCsvRows(`/v1/segments/${q(id)}/data`, SAMPLE_ROWS + 1);
    if (rows.length <= 1) section.append(h("p", {class: "muted"}, "No members."));
    else {
      const [header, ...members] = rows;
      section.append(table(header.map((title, i) => ({title, value: r => r[i] ?? ""})), members,
                           {id: "sample-table"}));
    }
  } catch (error) {
    const why = error instanceof ApiError && error.status === 501
      ? "Too many members for a direct read: use an export job." : error.message;
    section.append(h("p", {class: "muted"}, why));
  }
  return section;
}

/** The first ``count`` CSV rows of a streamed answer; the rest is not read (the stream is cancelled). */
async function firstCsvRows(path, count) {
  const response = await request("GET", path);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    text += decoder.decode(value, {stream: true});
    if (text.split("\n").length > count + 1) { await reader.cancel(); break; }
  }
  const rows = parseCsv(text);
  // a row cut by the cancel is dropped; a trailing empty line is not a row
  return rows.filter(r => !(r.length === 1 && r[0] === "")).slice(0, count);
}

async function showUploads(element, rejects, id) {
  const result = await get(`/api/segments/${q(id)}/uploads?limit=50`);
  if (!result.uploads.length) return replace(element, h("p", {class: "muted"}, "No upload yet."));
  replace(element, table([
    {title: "Upload", value: u => String(u.id), num: true},
    {title: "Method", value: u => u.method
      + (u.totalBatchCount > 1 ? ` ${u.currentBatchNumber}/${u.totalBatchCount}` : "")},
    {title: "Started", value: u => when(u.startedAt)},
    {title: "Seconds", value: u => u.durationSeconds == null ? "" : u.durationSeconds.toFixed(2), num: true},
    {title: "Received", value: u => number(u.numReceived), num: true},
    {title: "Invalid", value: u => number(u.numInvalid), num: true},
    {title: "Added", value: u => number(u.numAdded), num: true},
    {title: "Removed", value: u => number(u.numRemoved), num: true},
    {title: "Source", value: u => u.sourceSegmentID || ""},
    {title: "Rejects", value: u => u.rejectsStored > 0 && !u.rejectsExpired
      ? h("button", {type: "button", class: "show-rejects", onclick: () => showRejects(rejects, id, u.id)},
          `Show ${number(u.rejectsStored)}`)
      : (u.numInvalid > 0 ? (u.rejectsExpired ? "expired" : "not stored") : "")},
  ], result.uploads, {id: "upload-table"}));
}

async function showRejects(element, id, upload) {
  const path = `/api/segments/${q(id)}/rejects?upload=${q(upload)}`;
  const rows = parseCsv(await (await request("GET", path)).text()).filter(r => r.length > 1);
  const [header, ...lines] = rows;
  replace(element, h("h2", {id: "rejects-title", tabindex: "-1"}, `Rejected rows of upload ${upload}`),
    h("p", {}, h("button", {type: "button", id: "download-rejects",
                            onclick: () => download(path, `segment-${id}-upload-${upload}-rejects.csv`)},
                  "Download CSV"),
      lines.length > REJECTS_SHOWN ? ` (first ${REJECTS_SHOWN} shown)` : ""),
    table((header || []).map((title, i) => ({title, value: r => r[i] ?? ""})), lines.slice(0, REJECTS_SHOWN),
          {id: "rejects-table"}));
  element.querySelector("#rejects-title").focus();
}

function adminActions(segment) {
  const name = h("input", {id: "edit-name", value: segment.name, required: true});
  const description = h("input", {id: "edit-description", value: segment.description || ""});
  const patch = async (changes, done) => {
    try {
      await api("PATCH", `/api/segments/${q(segment.id)}`, changes);
      say(done, "ok");
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    } catch (error) { say(error.message, "error"); }
  };
  const active = segment.status === "active";
  let armed = false;
  const remove = h("button", {type: "button", class: "danger", id: "delete-audience", onclick: async () => {
    if (!armed) { armed = true; remove.textContent = "Confirm delete"; return; }
    try {
      await api("DELETE", `/api/segments/${q(segment.id)}`);
      say(`Deleted ${segment.name}.`, "ok");
      location.hash = "#/audiences";
    } catch (error) { say(error.message, "error"); }
  }}, "Delete");
  return h("section", {id: "admin"}, h("h2", {}, "Change"),
    h("form", {class: "inline", onsubmit: event => {
      event.preventDefault();
      patch({name: name.value, description: description.value}, "Saved.");
    }}, h("div", {}, h("label", {for: "edit-name"}, "Name"), name),
        h("div", {}, h("label", {for: "edit-description"}, "Description"), description),
        h("button", {type: "submit", class: "primary"}, "Save")),
    h("p", {class: "row"},
      segment.status === "deleted"
        ? h("button", {type: "button", onclick: () => patch({status: "active"}, "Restored.")}, "Restore")
        : [h("button", {type: "button", id: "toggle-status", onclick: () =>
              patch({status: active ? "inactive" : "active"}, active ? "Deactivated." : "Activated.")},
             active ? "Deactivate" : "Activate"), remove]));
}
