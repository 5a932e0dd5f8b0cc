// Throughput from /metrics (Prometheus text): rows/s and MB/s received, uploads in flight, open REPLACE
// sessions, sampled every 2 s over the last 5 minutes, drawn as small SVG charts.
import {request} from "./api.js";
import {h, replace, say, svg} from "./dom.js";

const EVERY_MS = 2000;
const KEEP = 150; // samples: 5 minutes
const SERIES = [
  {id: "rows", title: "Rows/s in", unit: "", metric: "audience_gateway_rows_received_total", rate: true},
  {id: "bytes", title: "MB/s in", unit: "", metric: "audience_gateway_received_bytes_total", rate: true,
   scale: 1 / 1e6},
  {id: "inflight", title: "Uploads in flight", metric: "audience_gateway_uploads_in_flight"},
  {id: "replace", title: "Open REPLACE sessions", metric: "audience_gateway_replace_sessions_open"},
];

/** Sum of every sample of each metric name (all label sets). */
export function parseMetrics(text) {
  const sums = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const value = Number(match[3]);
    if (Number.isFinite(value)) sums.set(match[1], (sums.get(match[1]) || 0) + value);
  }
  return sums;
}

export async function throughputPage(main) {
  const history = SERIES.map(() => []);
  let previous = null;
  const cells = SERIES.map(s => h("div", {id: `figure-${s.id}`}, h("span", {}, s.title), h("strong", {}, "…"),
                                     h("div", {class: "chart-box"})));
  replace(main, h("h1", {}, "Throughput"),
    h("p", {class: "muted"}, "This process's counters, every 2 s over the last 5 minutes."),
    h("div", {class: "figures"}, cells));
  const sample = async () => {
    const sums = parseMetrics(await (await request("GET", "/metrics")).text());
    const now = performance.now();
    SERIES.forEach((s, i) => {
      const raw = sums.get(s.metric) || 0;
      let value = raw;
      if (s.rate) {
        if (!previous) { s.last = raw; return; }
        value = Math.max(0, raw - s.last) / ((now - previous) / 1000);
        s.last = raw;
      }
      value *= s.scale || 1;
      history[i].push(value);
      if (history[i].length > KEEP) history[i].shift();
      const [label, figure, box] = cells[i].children;
      figure.textContent = value >= 100 ? Math.round(value).toLocaleString("en-US") : value.toFixed(2);
      replace(box, chart(history[i], s.title));
    });
    previous = now;
  };
  await sample().catch(error => say(error.message, "error"));
  const timer = setInterval(() => sample().catch(error => say(error.message, "error")), EVERY_MS);
  return () => clearInterval(timer);
}

function chart(values, title) {
  const width = 300, height = 80;
  const top = Math.max(1, ...values);
  const step = width / (KEEP - 1);
  const points = values.map((v, i) =>
    `${(i + KEEP - values.length) * step},${height - 2 - (v / top) * (height - 4)}`).join(" ");
  const figure = svg("svg", {class: "chart", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none",
                             role: "img", "aria-label": `${title}, last 5 minutes, peak ${top.toFixed(2)}`});
  figure.append(svg("polyline", {points}));
  return figure;
}
