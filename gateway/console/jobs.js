// Jobs (segment jobs and export files, with their downloads) and schedules (list, create with a cron field
// that shows the next runs as you type).
import {ApiError, allows, api, download, get, q} from "./api.js";
import {h, number, replace, say, table, when} from "./dom.js";

async function orMissing(promise) {
  try { return await promise; }
  catch (error) { if (error instanceof ApiError && error.status === 404) return null; throw error; }
}

export async function jobsPage(main, session) {
  if (!allows(session.scope, "write")) {
    replace(main, h("h1", {}, "Jobs"), h("p", {class: "muted"}, "Listing jobs needs a write key."));
    return;
  }
  const segmentJobs = h("section", {id: "segment-jobs"});
  const exportJobs = h("section", {id: "export-jobs"});
  replace(main, h("h1", {}, "Jobs"), segmentJobs, exportJobs);
  const refresh = async () => {
    const [segments, exports] = await Promise.all([orMissing(get("/api/segment/jobs?limit=50")),
                                                   orMissing(get("/api/export/jobs?limit=50"))]);
    replace(segmentJobs, h("h2", {}, "Segment jobs"), !segments ? h("p", {class: "muted"}, "Not available.")
      : segments.children.length ? table([
        {title: "Job", value: j => String(j.id), num: true},
        {title: "Status", value: j => j.status},
        {title: "Definitions", value: j => j.segments.map(s => s.segmentId).join(", ")},
        {title: "Source", value: j => j.source},
        {title: "Created", value: j => when(j.creationTime)},
        {title: "Profiles", value: j => number(j.metrics.totalProfiles), num: true},
        {title: "ms", value: j => number((j.metrics.totalTime || {}).totalTimeInMs), num: true},
      ], segments.children, {id: "segment-job-table"}) : h("p", {class: "muted"}, "No segment job yet."));
    replace(exportJobs, h("h2", {}, "Export files"), !exports ? h("p", {class: "muted"}, "Not available.")
      : exports.jobs.length ? table([
        {title: "Job", value: j => String(j.id), num: true},
        {title: "Status", value: j => j.status},
        {title: "Segment", value: j => j.filter.segments.map(s => h("a", {href: `#/audiences/${s.segmentId}`},
                                                                        s.segmentId))},
        {title: "Format", value: j => j.format},
        {title: "Rows", value: j => number(j.metrics.totalExportedProfileCounter ?? j.progress), num: true},
        {title: "Created", value: j => when(j.creationTime)},
        {title: "File", value: j => j.file ? h("button", {type: "button", onclick: () =>
            download(j.file.url, j.file.name).catch(error => say(error.message, "error"))},
            `Download ${j.file.name}`) : ""},
      ], exports.jobs, {id: "export-job-table"}) : h("p", {class: "muted"}, "No export job yet."));
  };
  await refresh();
  const timer = setInterval(() => refresh().catch(error => say(error.message, "error")), 3000);
  return () => clearInterval(timer);
}

export async function schedulesPage(main, session) {
  if (!allows(session.scope, "write")) {
    replace(main, h("h1", {}, "Schedules"), h("p", {class: "muted"}, "Listing schedules needs a write key."));
    return;
  }
  const list = h("section", {id: "schedules"});
  const show = async () => {
    const result = await orMissing(get("/api/config/schedules?limit=100"));
    if (!result) return replace(list, h("p", {class: "muted"}, "This gateway has no schedules."));
    replace(list, result.children.length ? table([
      {title: "Name", value: s => s.name},
      {title: "Cron (UTC)", value: s => h("code", {}, s.schedule)},
      {title: "Definitions", value: s => ((s.properties || {}).segments || []).join(", ")},
      {title: "State", value: s => s.state},
      {title: "Next run", value: s => when(s.nextRunTime) || "—"},
      {title: "Last job", value: s => s.lastJobId ? String(s.lastJobId) : "—"},
      {title: "", value: s => allows(session.scope, "admin") ? h("button", {type: "button", onclick: async () => {
        try {
          await api("PATCH", `/api/config/schedules/${q(s.id)}`, {state: s.state === "active" ? "inactive" : "active"});
          await show();
        } catch (error) { say(error.message, "error"); }
      }}, s.state === "active" ? "Pause" : "Activate") : ""},
    ], result.children, {id: "schedule-table"}) : h("p", {class: "muted"}, "No schedule yet."));
  };
  const name = h("input", {id: "schedule-name", required: true});
  const cron = h("input", {id: "schedule-cron", required: true, value: "0 2 * * *",
                           "aria-describedby": "cron-help cron-runs"});
  const runs = h("div", {id: "cron-runs", "aria-live": "polite"});
  let timer = null, sequence = 0;
  const showRuns = async () => { // the next runs as the scheduler computes them, or why the cron is refused
    const mine = ++sequence;
    const text = cron.value.trim();
    if (!text) return replace(runs);
    try {
      const result = await api("POST", "/api/config/schedules/validate", {schedule: text, count: 5});
      if (mine !== sequence) return;
      replace(runs, result.valid
        ? [h("p", {class: "muted"}, "Next runs:"),
           h("ol", {id: "cron-next-runs"}, result.nextRunTimes.map(time => h("li", {}, when(time))))]
        : result.errors.map(e => h("p", {class: "error cron-error"}, e.message)));
    } catch (error) { if (mine === sequence) replace(runs, h("p", {class: "error cron-error"}, error.message)); }
  };
  cron.addEventListener("input", () => { // debounced; what was shown belongs to the previous text
    clearTimeout(timer);
    sequence++;
    replace(runs);
    timer = setTimeout(showRuns, 300);
  });
  const segments = h("input", {id: "schedule-segments", value: "*"});
  const state = h("select", {id: "schedule-state"}, h("option", {value: "active"}, "active"),
                  h("option", {value: "inactive"}, "inactive"));
  const form = allows(session.scope, "admin") ? h("form", {id: "schedule-form", onsubmit: async event => {
    event.preventDefault();
    const ids = segments.value.trim();
    try {
      const created = await api("POST", "/api/config/schedules", {
        name: name.value, type: "batch_segmentation", schedule: cron.value.trim(), state: state.value,
        properties: {segments: ids === "*" || ids === "" ? ["*"] : ids.split(/[\s,]+/).filter(Boolean)}});
      say(`Created ${created.name}: next run ${when(created.nextRunTime) || "— (inactive)"}.`, "ok");
      await show();
    } catch (error) { say(error.message, "error"); }
  }}, h("h2", {}, "New schedule"),
    h("label", {for: "schedule-name"}, "Name"), name,
    h("label", {for: "schedule-cron"}, "Cron"), cron,
    h("p", {class: "muted", id: "cron-help"},
      "UTC; minute hour day month weekday (0 2 * * * = daily at 02:00), or Quartz with seconds first."),
    runs,
    h("label", {for: "schedule-segments"}, "Definitions (* or ids)"), segments,
    h("label", {for: "schedule-state"}, "State"), state,
    h("p", {}, h("button", {type: "submit", class: "primary"}, "Create"))) : null;
  replace(main, h("h1", {}, "Schedules"), list, form);
  if (form) showRuns();
  await show();
  return () => { clearTimeout(timer); sequence++; };
}
