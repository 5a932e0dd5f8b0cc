// Sign-in, navigation and the hash router (#/audiences, #/audiences/12, #/definitions/3, …).
import {ApiError, key, whoami} from "./api.js";
import {h, replace, say} from "./dom.js";
import {audienceList, audiencePage} from "./audiences.js";
import {definitionList, definitionPage} from "./definitions.js";
import {jobsPage, schedulesPage} from "./jobs.js";
import {throughputPage} from "./throughput.js";

const main = document.getElementById("main");
const session = {scope: null, endpoint: null};
let leave = null; // the current page's clean-up (timers)

const ROUTES = [
  [/^#\/audiences\/(\d+)$/, id => audiencePage(main, session, id)],
  [/^#\/audiences$/, () => audienceList(main, session)],
  [/^#\/definitions\/(new|\d+)$/, id => definitionPage(main, session, id)],
  [/^#\/definitions$/, () => definitionList(main, session)],
  [/^#\/jobs$/, () => jobsPage(main, session)],
  [/^#\/schedules$/, () => schedulesPage(main, session)],
  [/^#\/throughput$/, () => throughputPage(main, session)],
];

function signInForm(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("who").textContent = "";
  const input = h("input", {id: "api-key", type: "password", autocomplete: "off", required: true, size: 40});
  const form = h("form", {id: "sign-in", onsubmit: async event => {
    event.preventDefault();
    key.set(input.value.trim());
    await start();
  }}, h("label", {for: "api-key"}, "API key"), h("div", {class: "row"}, input,
    h("button", {type: "submit", class: "primary"}, "Sign in")),
    h("p", {class: "muted"}, "The key stays in this tab (session storage) and is sent only to this gateway."));
  replace(main, h("h1", {}, "Sign in"), message ? h("p", {class: "error", role: "alert"}, message) : null, form);
  input.focus();
}

async function start() {
  if (!key.get()) return signInForm();
  try {
    Object.assign(session, await whoami());
  } catch (error) {
    key.clear();
    return signInForm(error instanceof ApiError && error.status === 401 ? "This key is not valid." : error.message);
  }
  document.getElementById("nav").hidden = false;
  document.getElementById("sign-out").hidden = false;
  document.getElementById("who").textContent =
    session.endpoint ? `${session.endpoint} · ${session.scope}` : session.scope;
  if (!location.hash || location.hash === "#" || location.hash === "#main") location.hash = "#/audiences";
  else route();
}

async function route() {
  if (!key.get() || !session.scope) return;
  if (location.hash === "#main") return;
  if (leave) { leave(); leave = null; }
  say("");
  for (const link of document.querySelectorAll("nav a")) {
    const current = location.hash.startsWith(link.getAttribute("href"));
    if (current) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  const match = ROUTES.map(([pattern, page]) => [pattern.exec(location.hash), page]).find(([m]) => m);
  if (!match) { location.hash = "#/audiences"; return; }
  replace(main, h("p", {class: "muted"}, "Loading…"));
  try {
    leave = (await match[1](...match[0].slice(1))) || null;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) { key.clear(); return signInForm("The key was refused."); }
    replace(main, h("h1", {}, "Error"), h("p", {class: "error", role: "alert"}, error.message));
  }
  main.focus();
}

document.getElementById("sign-out").addEventListener("click", () => {
  key.clear();
  session.scope = null;
  if (leave) { leave(); leave = null; }
  history.replaceState(null, "", location.pathname);
  signInForm();
});
window.addEventListener("hashchange", route);
start();
