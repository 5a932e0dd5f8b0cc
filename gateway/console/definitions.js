// Definitions: the list and the editor (validation as you type with the error's place underlined, the live
// estimate and a preview when the gateway has them, save, "run now" and the definition's last jobs).
import {ApiError, allows, api, get, q} from "./api.js";
import {facts, h, number, replace, say, table, when} from "./dom.js";

const PATH = "/api/segment/definitions";
const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
const PREVIEW_ROWS = 20;
let previews = true; // false once POST /api/preview answered 404 (a gateway without previews)

function unavailable(main, error) {
  if (error instanceof ApiError && error.status === 404 && error.code === "not_found") {
    replace(main, h("h1", {}, "Definitions"), h("p", {class: "muted"}, "This gateway has no segment definitions."));
    return true;
  }
  return false;
}

export async function definitionList(main, session) {
  let result;
  try { result = await get(`${PATH}?limit=100&sort=name:asc`); }
  catch (error) { if (unavailable(main, error)) return; throw error; }
  replace(main, h("h1", {}, "Definitions"),
    allows(session.scope, "admin") ? h("p", {}, h("a", {href: "#/definitions/new", id: "new-definition"},
                                                  "New definition")) : null,
    result.segments.length ? table([
      {title: "Name", value: d => h("a", {href: `#/definitions/${d.id}`}, d.name)},
      {title: "Expression", value: d => h("code", {}, d.expression.value)},
      {title: "Audience", value: d => h("a", {href: `#/audiences/${d.audienceSegmentId}`}, d.audienceSegmentId)},
      {title: "Updated", value: d => when(d.updateTime)},
    ], result.segments, {id: "definition-table"}) : h("p", {class: "muted"}, "No definition yet."));
}

function sourcesText(sources) {
  return Array.isArray(sources) ? sources.join(", ") : (sources || "*");
}

function sourcesValue(text) {
  const trimmed = text.trim();
  return trimmed === "" || trimmed === "*" ? "*" : trimmed.split(/[\s,]+/).filter(Boolean);
}

export async function definitionPage(main, session, id) {
  let definition = null;
  if (id !== "new") {
    try { definition = await get(`${PATH}/${q(id)}`); }
    catch (error) { if (unavailable(main, error)) return; throw error; }
  }
  const admin = allows(session.scope, "admin");
  const jobs = h("section", {id: "definition-jobs"});
  if (!admin) {
    replace(main, h("p", {}, h("a", {href: "#/definitions"}, "← Definitions")), h("h1", {}, definition.name),
      facts([["Expression", h("code", {}, definition.expression.value)], ["Sources", sourcesText(definition.sources)],
             ["Audience", h("a", {href: `#/audiences/${definition.audienceSegmentId}`},
                            definition.audienceSegmentId)]]),
      jobs);
    await showJobs(jobs, definition.id);
    return;
  }
  const name = h("input", {id: "def-name", required: true, value: definition ? definition.name : ""});
  const description = h("input", {id: "def-description", value: definition ? definition.description : ""});
  const sources = h("input", {id: "def-sources", value: definition ? sourcesText(definition.sources) : "*",
                              "aria-describedby": "def-sources-help"});
  const expression = h("textarea", {id: "def-expression", spellcheck: "false", rows: 3,
                                    "aria-describedby": "def-errors"});
  expression.value = definition ? definition.expression.value : "";
  const mirror = h("div", {class: "mirror", id: "def-mirror", "aria-hidden": "true"});
  const errors = h("div", {id: "def-errors", "aria-live": "polite"});
  const estimate = h("section", {id: "estimate"});
  const preview = h("section", {id: "preview"});
  const runResult = h("div", {id: "run-result", "aria-live": "polite"});
  let timer = null, sequence = 0, previewId = null;

  const dropPreview = () => {
    if (previewId) api("DELETE", `/api/preview/${q(previewId)}`).catch(() => {});
    previewId = null;
  };
  const validate = async () => {
    const mine = ++sequence;
    const text = expression.value;
    let result;
    try {
      result = await api("POST", `${PATH}/validate`, {
        expression: {type: "PQL", format: "pql/text", value: text}, sources: sourcesValue(sources.value)});
    } catch (error) { if (mine === sequence) replace(errors, h("p", {class: "error"}, error.message)); return; }
    if (mine !== sequence) return;
    const first = result.errors.find(e => Number.isInteger(e.position));
    underline(mirror, text, first ? first.position : null);
    replace(errors, result.valid
      ? h("p", {class: "ok", id: "def-valid"}, "Valid" + (result.attributes.length
          ? ` · uses ${result.attributes.join(", ")}` : ""))
      : result.errors.map(e => h("p", {class: "error def-error", "data-position": e.position ?? ""},
          e.message, Number.isInteger(e.position) ? ` (at ${where(text, e.position)})` : "")));
    dropPreview();
    if (result.valid) await showEstimate(mine, text, result.estimate);
    else { replace(estimate); replace(preview); }
  };
  const showFigure = size => replace(estimate, h("h2", {}, "Estimate"), h("p", {id: "estimate-figure"},
    h("strong", {}, number(size.estimatedSize)), size.exact ? " profiles (exact)"
      : ` profiles (${size.confidenceInterval || "95%"} interval ${number(size.lowerBound)} – `
        + `${number(size.upperBound)}, standard error ${number(Math.round(size.standardError))})`));
  const showEstimate = async (mine, text, known) => { // known: the estimate validate answered, if it did
    if (known) showFigure(known);
    if (!previews) return;
    let created;
    try {
      created = await api("POST", "/api/preview", {predicateExpression: text, predicateType: "pql/text",
                                                   sources: sourcesValue(sources.value)});
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) { previews = false; return; }
      return replace(known ? preview : estimate, h("p", {class: "error"}, error.message));
    }
    if (mine !== sequence) { api("DELETE", `/api/preview/${q(created.previewId)}`).catch(() => {}); return; }
    previewId = created.previewId;
    try {
      const [size, page] = await Promise.all([
        known || api("GET", `/api/estimate/${q(previewId)}`),
        api("GET", `/api/preview/${q(previewId)}?limit=${PREVIEW_ROWS}`)]);
      if (mine !== sequence) return;
      if (!known) showFigure(size);
      const rows = page.results || [];
      const keys = [...new Set(rows.flatMap(r => Object.keys(r)))];
      replace(preview, h("h2", {}, "Preview"), rows.length
        ? table(keys.map(k => ({title: k, value: r => r[k] == null ? "" : String(r[k])})), rows, {id: "preview-table"})
        : h("p", {class: "muted"}, "No profile qualifies."));
    } catch (error) {
      if (mine === sequence) replace(known ? preview : estimate, h("p", {class: "error"}, error.message));
    }
  };
  const schedule = () => { clearTimeout(timer); timer = setTimeout(validate, 300); };
  const edited = () => { // what was shown belongs to the previous text: gone until the new answers
    underline(mirror, expression.value, null);
    replace(estimate);
    replace(preview);
    schedule();
  };
  expression.addEventListener("input", edited);
  sources.addEventListener("input", edited);

  const save = async event => {
    event.preventDefault();
    const body = {name: name.value, description: description.value, sources: sourcesValue(sources.value),
                  expression: {type: "PQL", format: "pql/text", value: expression.value}};
    try {
      const saved = definition ? await api("PATCH", `${PATH}/${q(definition.id)}`, body)
                               : await api("POST", PATH, body);
      say(`Saved ${saved.name}.`, "ok");
      if (!definition) location.hash = `#/definitions/${saved.id}`;
      else definition = saved;
    } catch (error) { say(error.message, "error"); }
  };
  const run = async () => {
    try {
      let job = await api("POST", "/api/segment/jobs", {segments: [{segmentId: String(definition.id)}]});
      replace(runResult, h("p", {}, `Job ${job.id}: ${job.status}`));
      const deadline = Date.now() + 120000;
      while (!TERMINAL.has(job.status) && Date.now() < deadline) {
        await new Promise(resolve => setTimeout(resolve, 400));
        job = await get(`/api/segment/jobs/${q(job.id)}`);
      }
      const counts = (job.metrics.segmentedProfileCounter || {})[definition.id];
      replace(runResult, h("p", {id: "run-status", class: job.status === "SUCCEEDED" ? "ok" : "error"},
        `Job ${job.id}: ${job.status}`, counts !== undefined ? ` · ${number(counts)} profiles · ` : " · ",
        h("a", {href: `#/audiences/${definition.audienceSegmentId}`, id: "run-audience"}, "see the audience")),
        job.errors.map(e => h("p", {class: "error"}, e.msg || e.message || JSON.stringify(e))));
      await showJobs(jobs, definition.id);
    } catch (error) { say(error.message, "error"); }
  };

  replace(main, h("p", {}, h("a", {href: "#/definitions"}, "← Definitions")),
    h("h1", {}, definition ? definition.name : "New definition"),
    definition ? h("p", {}, "Audience: ", h("a", {href: `#/audiences/${definition.audienceSegmentId}`},
                                            `segment ${definition.audienceSegmentId}`)) : null,
    h("form", {id: "definition-form", onsubmit: save},
      h("label", {for: "def-name"}, "Name"), name,
      h("label", {for: "def-description"}, "Description"), description,
      h("label", {for: "def-sources"}, "Sources"), sources,
      h("p", {class: "muted", id: "def-sources-help"}, "* for every active list, or segment ids: 1, 2"),
      h("label", {for: "def-expression"}, "Expression (PQL)"), expression, mirror, errors,
      h("p", {class: "row"}, h("button", {type: "submit", class: "primary", id: "def-save"}, "Save"),
        definition ? h("button", {type: "button", id: "def-run", onclick: run}, "Run now") : null)),
    runResult, estimate, preview, jobs);
  underline(mirror, expression.value, null);
  if (expression.value) validate();
  if (definition) await showJobs(jobs, definition.id);
  return () => { clearTimeout(timer); sequence++; dropPreview(); };
}

/** The expression in the mirror under the editor, the word (or character) at ``position`` underlined. */
function underline(mirror, text, position) {
  if (position === null || position === undefined || position < 0) return replace(mirror, text || " ");
  const at = Math.min(position, text.length);
  const end = at + Math.max(1, (/^\w+/.exec(text.slice(at)) || [""])[0].length);
  replace(mirror, text.slice(0, at), h("u", {id: "def-error-mark"}, text.slice(at, end) || " "), text.slice(end));
}

function where(text, position) {
  const before = text.slice(0, position).split("\n");
  return `line ${before.length}, column ${before[before.length - 1].length + 1}`;
}

async function showJobs(element, id) {
  const result = await get("/api/segment/jobs?limit=100");
  const mine = result.children.filter(job => job.segments.some(s => s.segmentId === "*" || s.segmentId === String(id)))
    .slice(0, 10);
  const counts = job => ((job.metrics || {}).segmentedProfileByStatusCounter || {})[id] || {};
  replace(element, h("h2", {}, "Last jobs"), mine.length ? table([
    {title: "Job", value: j => String(j.id), num: true},
    {title: "Status", value: j => j.status},
    {title: "Created", value: j => when(j.creationTime)},
    {title: "Realized", value: j => number(counts(j).realized), num: true},
    {title: "Existing", value: j => number(counts(j).existing), num: true},
    {title: "Exited", value: j => number(counts(j).exited), num: true},
    {title: "ms", value: j => number(((j.metrics || {}).segmentTimeInMs || {})[id]), num: true},
  ], mine, {id: "definition-jobs-table"}) : h("p", {class: "muted"}, "Never run."));
}
