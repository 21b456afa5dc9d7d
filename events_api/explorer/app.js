/*
 * changefeed explorer: the feed, one change with its diff, a subject's timeline.
 *
 * Contract:
 * - Talks only to this origin's events API (/v1), with the API key in the X-Api-Key header.
 *   The key lives in sessionStorage (this tab only): never in a URL, a cookie or a log.
 * - Every string that comes from the API is rendered with textContent (or as an attribute
 *   value set through the DOM); nothing is ever parsed as HTML, and links are built only
 *   from this page's own routes ("#/..."), never from payload values.
 * - Routes live in the URL fragment (#/events?filters, #/change/ID, #/subject/TYPE/ID,
 *   #/request/ID), so back/forward and bookmarks work; the fragment holds filters, never
 *   the key.
 * - When the first page of the feed is on screen, the page sets the performance mark
 *   "explorer:first-page" (what bench/bench_explorer.py measures).
 */
"use strict";

(function () {
  const KEY_SLOT = "changefeed.explorer.apiKey";
  const FILTERS = ["start", "end", "event_type", "subject_type", "subject_id", "user",
    "request_id", "criticality", "code"];
  const CRITICALITY = ["n/a", "critical", "high", "medium", "low", "trivial"];
  const MASK_PREFIX = "[REDACTED:";
  const MAX_LIVE_ROWS = 1000;
  const MAX_JSON_LINES = 5000;
  const POLL_TIMEOUT_S = 25;
  const HISTORY_PAGE = 100;

  const $ = (id) => document.getElementById(id);

  // -- small DOM helpers: text only --------------------------------------------------------

  /** An element with text children; attrs are set as properties/attributes, never HTML. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [name, value] of Object.entries(attrs)) {
        if (value === undefined || value === null || value === false) continue;
        if (name === "className") node.className = value;
        else if (name === "text") node.textContent = String(value);
        else if (name === "href") node.setAttribute("href", route(value));
        else if (name === "dataset") Object.assign(node.dataset, value);
        else node.setAttribute(name, value === true ? "" : String(value));
      }
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** Only this page's own routes can become links. */
  function route(value) {
    const text = String(value);
    if (!text.startsWith("#/")) throw new Error("not a page route: " + text);
    return text;
  }

  const seg = encodeURIComponent;
  const changeHref = (id) => "#/change/" + seg(id);
  const subjectHref = (type, id) => "#/subject/" + seg(type) + "/" + seg(id);
  const requestHref = (id) => "#/request/" + seg(id);
  function feedHref(filters) {
    const query = new URLSearchParams();
    for (const name of [...FILTERS, "limit"]) {
      if (filters[name]) query.set(name, filters[name]);
    }
    const text = query.toString();
    return "#/events" + (text ? "?" + text : "");
  }

  /** Replace ``node``'s children, skipping absent ones (null, undefined, false). */
  function fill(node, ...children) {
    node.replaceChildren(...children.filter((child) => child !== null && child !== undefined && child !== false));
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  // -- the API ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  class InputError extends Error {}

  function apiKey() {
    return sessionStorage.getItem(KEY_SLOT);
  }

  async function api(path, params, signal, key) {
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
    }
    let response;
    try {
      response = await fetch(url, {
        headers: { "X-Api-Key": key || apiKey() || "", Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
        referrerPolicy: "no-referrer",
        signal,
      });
    } catch (exc) {
      if (exc && exc.name === "AbortError") throw exc;
      throw new ApiError(0, "network", "the events API did not answer (" + exc.message + ")");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (exc) {
      body = null;
    }
    if (!response.ok) {
      const error = body && body.error;
      throw new ApiError(response.status, (error && error.code) || "http_" + response.status,
        (error && error.message) || "HTTP " + response.status);
    }
    return body;
  }

  /** Errors of a view's requests: a rejected key signs out, the rest is shown. */
  function failed(exc) {
    if (exc && exc.name === "AbortError") return;
    if (exc instanceof ApiError && exc.status === 401) {
      signOut("The API key was refused: " + exc.message);
      return;
    }
    showError(exc instanceof ApiError || exc instanceof InputError ? exc.message : String(exc));
  }

  // -- sign in and out -------------------------------------------------------------------

  let me = null;

  async function signIn(event) {
    event.preventDefault();
    const input = $("api-key");
    const key = input.value.trim();
    const error = $("signin-error");
    error.hidden = true;
    if (!key) {
      error.textContent = "Paste an API key first.";
      error.hidden = false;
      input.focus();
      return;
    }
    $("signin-button").disabled = true;
    try {
      const who = await api("/v1/me", null, undefined, key);
      sessionStorage.setItem(KEY_SLOT, key);
      input.value = "";
      showIdentity(who);
      if (!location.hash.startsWith("#/")) location.hash = "#/events";
      else render();
    } catch (exc) {
      error.textContent = exc instanceof ApiError && exc.status === 401
        ? "This key was refused: " + exc.message
        : "Could not sign in: " + exc.message;
      error.hidden = false;
      input.focus();
    } finally {
      $("signin-button").disabled = false;
    }
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY_SLOT);
    me = null;
    stopTail();
    for (const id of ["feed-table", "request-table"]) $(id).tBodies[0].replaceChildren();
    for (const id of ["change-meta", "change-paths", "change-previous", "change-current",
      "change-badges", "change-links", "subject-state", "timeline", "subject-badges",
      "subject-links", "feed-summary", "request-summary"]) {
      $(id).replaceChildren();
    }
    $("nav").hidden = true;
    $("identity").hidden = true;
    showError("");
    history.replaceState(null, "", location.pathname);
    showView("signin-view");
    const error = $("signin-error");
    error.textContent = message || "";
    error.hidden = !message;
  }

  function showIdentity(who) {
    me = who;
    $("who-tenant").textContent = who.tenant_id;
    $("who-role").textContent = who.role;
    $("who-user").textContent = who.user_id || "";
    $("who-user-wrap").hidden = !who.user_id;
    $("identity").hidden = false;
    $("nav").hidden = false;
    document.body.dataset.role = who.role;
    const userField = $("f-user");
    if (who.role === "user") {
      userField.value = who.user_id;
      userField.readOnly = true;
      userField.title = "a user key reads its own user's events only";
    } else {
      userField.readOnly = false;
      userField.removeAttribute("title");
    }
  }

  // -- routing -----------------------------------------------------------------------------

  function parseRoute() {
    const hash = location.hash;
    if (!hash.startsWith("#/")) return { name: "events", args: [], query: new URLSearchParams() };
    const body = hash.slice(2);
    const mark = body.indexOf("?");
    const path = mark < 0 ? body : body.slice(0, mark);
    const query = new URLSearchParams(mark < 0 ? "" : body.slice(mark + 1));
    let parts;
    try {
      parts = path.split("/").map(decodeURIComponent);
    } catch (exc) {
      parts = ["events"];
    }
    return { name: parts[0] || "events", args: parts.slice(1), query };
  }

  function showView(id) {
    for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== id;
    document.body.dataset.view = id;
  }

  function focusTitle(id) {
    const title = $(id);
    if (title && document.activeElement !== $("api-key")) title.focus({ preventScroll: false });
  }

  let renderToken = 0;

  function render() {
    if (!apiKey()) {
      showView("signin-view");
      return;
    }
    showError("");
    const current = parseRoute();
    const token = ++renderToken;
    if (current.name !== "events") stopTail();
    if (current.name === "change" && current.args[0]) {
      showChange(current.args[0], token);
    } else if (current.name === "subject" && current.args.length >= 2) {
      showSubject(current.args[0], current.args.slice(1).join("/"), token);
    } else if (current.name === "request" && current.args[0]) {
      showRequest(current.args[0], token);
    } else {
      showFeed(current.query, token);
    }
  }

  // -- formatting ------------------------------------------------------------------------

  function shortTime(iso) {
    return typeof iso === "string" ? iso.replace("T", " ").replace(/(\.\d{3})\d*Z$/, "$1") : "";
  }

  function timeNode(iso) {
    return el("time", { datetime: iso, title: iso, text: shortTime(iso) });
  }

  function isMasked(value) {
    return typeof value === "string" && value.startsWith(MASK_PREFIX);
  }

  function maskedNode(value) {
    return el("span", { className: "masked", title: "masked value: " + value },
      el("span", { className: "badge badge-masked", text: "masked" }), " ",
      el("span", { className: "digest", text: value }));
  }

  /** A payload value in one line: JSON text, masked values marked, long ones cut. */
  function valueNode(value) {
    if (isMasked(value)) return maskedNode(value);
    if (value === undefined) return el("span", { className: "absent", text: "(absent)" });
    let text = JSON.stringify(value);
    if (text === undefined) text = String(value);
    const full = text;
    if (text.length > 300) text = text.slice(0, 300) + "…";
    return el("code", { className: "value " + kindOf(value), title: full.length > 300 ? full.slice(0, 2000) : null, text });
  }

  function kindOf(value) {
    if (value === null) return "null";
    if (Array.isArray(value)) return "array";
    return typeof value;
  }

  function criticalityText(level) {
    return level in CRITICALITY ? level + " " + CRITICALITY[level] : String(level);
  }

  function changedPaths(event) {
    const paths = new Set(Object.keys(event.field_changes || {}));
    for (const op of event.payload_changes || []) {
      if (typeof op.path === "string") paths.add(op.path);
      if (typeof op.from === "string") paths.add(op.from);
    }
    return paths;
  }

  function badge(text, kind, title) {
    return el("span", { className: "badge badge-" + kind, title, text });
  }

  // -- event rows --------------------------------------------------------------------------

  function cell(label, ...children) {
    return el("td", { dataset: { label } }, ...children);
  }

  function eventRow(event) {
    const paths = Object.keys(event.field_changes || {});
    const shown = paths.slice(0, 3).join(", ");
    const more = paths.length > 3 ? " +" + (paths.length - 3) : "";
    const user = event.actor && event.actor.user_id;
    return el("tr", { dataset: { changeId: event.change_id } },
      cell("Time", timeNode(event.created_at)),
      cell("Event",
        el("a", { href: changeHref(event.change_id), className: "event-link", text: event.event_type }),
        event.late ? badge("late", "late", "arrived after a newer change of the subject") : null),
      cell("Subject",
        el("a", { href: subjectHref(event.subject_type, event.subject_id), className: "subject-link" },
          el("span", { className: "subject-type", text: event.subject_type }), " ",
          el("span", { className: "subject-id", text: event.subject_id }))),
      cell("User", el("span", { className: "user", text: user || "—" })),
      cell("Crit.", el("span", { className: "crit crit-" + event.criticality, text: criticalityText(event.criticality) })),
      cell("Code", String(event.code)),
      cell("Changed", el("span", { className: "paths", title: paths.join(", ") || null, text: (shown || (event.action === "custom" ? "custom event" : "—")) + more })));
  }

  function openRowOnClick(tbody) {
    tbody.addEventListener("click", (event) => {
      if (event.target.closest("a, button, input")) return;
      const row = event.target.closest("tr[data-change-id]");
      if (row && !String(window.getSelection())) location.hash = changeHref(row.dataset.changeId);
    });
  }

  // -- the feed ----------------------------------------------------------------------------

  const feed = {
    key: null, // the route query the pages below belong to
    cursors: [null], // cursor of each page (null: the first)
    page: 0,
    next: null,
    hasMore: false,
    firstMarked: false,
    resumeTail: false, // turn the live tail back on once new filters are applied
  };

  function filtersOf(query) {
    const out = {};
    for (const name of [...FILTERS, "limit"]) {
      const value = query.get(name);
      if (value) out[name] = value;
    }
    if (me && me.role === "user") delete out.user;
    return out;
  }

  function fillForm(filters) {
    const form = $("filters");
    for (const name of FILTERS) {
      if (name === "criticality") continue;
      const input = form.elements[name];
      if (name === "user" && me && me.role === "user") continue;
      input.value = filters[name] || "";
    }
    const levels = new Set((filters.criticality || "").split(",").filter(Boolean));
    for (const box of form.querySelectorAll('input[name="criticality"]')) box.checked = levels.has(box.value);
    form.elements.limit.value = ["25", "50", "100", "250", "500"].includes(filters.limit) ? filters.limit : "100";
  }

  function readForm() {
    const form = $("filters");
    const out = {};
    for (const name of FILTERS) {
      if (name === "criticality") continue;
      const value = form.elements[name].value.trim();
      if (value) out[name] = value;
    }
    const levels = [...form.querySelectorAll('input[name="criticality"]:checked')].map((b) => b.value);
    if (levels.length) out.criticality = levels.join(",");
    if (form.elements.limit.value !== "100") out.limit = form.elements.limit.value;
    if (me && me.role === "user") delete out.user;
    return out;
  }

  const UNITS = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 604800e3 };

  /** RFC 3339 of a time as people type it: -24h, 2026-11-28 09:00 (UTC), or RFC 3339. */
  function resolveTime(label, raw) {
    const text = raw.trim();
    if (!text) return undefined;
    if (text.toLowerCase() === "now") return new Date().toISOString();
    let match = /^-?\s*(\d+(?:\.\d+)?)\s*([smhdw])$/i.exec(text);
    if (match) return new Date(Date.now() - Number(match[1]) * UNITS[match[2].toLowerCase()]).toISOString();
    match = /^(\d{4}-\d{2}-\d{2})(?:[ Tt](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?))?\s*(Z|z|[+-]\d{2}:\d{2})?$/.exec(text);
    if (match) {
      const clock = match[2] ? (match[2].length === 5 ? match[2] + ":00" : match[2]) : "00:00:00";
      return match[1] + "T" + clock + (match[3] ? match[3].toUpperCase() : "Z");
    }
    throw new InputError(label + ": " + JSON.stringify(text) +
      " is not a time; use -24h, 2026-11-28 09:00 (UTC) or 2026-11-28T09:00:00+01:00");
  }

  function apiParams(filters) {
    const out = {};
    for (const name of FILTERS) if (filters[name]) out[name] = filters[name];
    if (out.start) out.start = resolveTime("From", out.start);
    if (out.end) out.end = resolveTime("Until", out.end);
    return out;
  }

  async function showFeed(query, token) {
    showView("feed-view");
    const key = query.toString();
    const filters = filtersOf(query);
    fillForm(filters);
    if (feed.key !== key) {
      stopTail();
      feed.key = key;
      feed.cursors = [null];
      feed.page = 0;
    }
    const resume = feed.resumeTail;
    feed.resumeTail = false;
    focusTitle("feed-title");
    await loadFeedPage(token);
    if (resume && token === renderToken) startTail();
  }

  async function loadFeedPage(token) {
    const query = new URLSearchParams(feed.key);
    const filters = filtersOf(query);
    const cursor = feed.cursors[feed.page];
    const limit = filters.limit || "100";
    const summary = $("feed-summary");
    summary.textContent = "Loading…";
    updatePager(true);
    let page;
    try {
      const params = cursor ? { cursor, limit } : { ...apiParams(filters), order: "desc", limit };
      page = await api("/v1/events", params);
    } catch (exc) {
      if (token !== renderToken) return;
      summary.textContent = "";
      $("feed-table").tBodies[0].replaceChildren();
      failed(exc);
      return;
    }
    if (token !== renderToken) return;
    const rows = document.createDocumentFragment();
    for (const event of page.events) rows.append(eventRow(event));
    $("feed-table").tBodies[0].replaceChildren(rows);
    if (!feed.firstMarked) performance.mark("explorer:first-rows");
    feed.next = page.next_cursor;
    feed.hasMore = page.has_more;
    const older = page.has_more
      ? (page.remaining_exact ? page.remaining.toLocaleString("en") : "more than " + page.remaining.toLocaleString("en")) + " older"
      : "no older events";
    summary.textContent = page.count === 0 && feed.page === 0
      ? "No events match these filters within retention."
      : page.count + " event" + (page.count === 1 ? "" : "s") + " on page " + (feed.page + 1) + ", newest first; " + older + ".";
    updatePager(false);
    markFirstPage();
  }

  function markFirstPage() {
    if (feed.firstMarked) return;
    feed.firstMarked = true;
    // after the rows are laid out and painted: the next frame, then the task after it
    requestAnimationFrame(() => setTimeout(() => {
      performance.mark("explorer:first-page");
      document.body.dataset.firstPage = "drawn";
    }, 0));
  }

  function updatePager(loading) {
    $("page-newest").disabled = loading || feed.page === 0;
    $("page-newer").disabled = loading || feed.page === 0;
    $("page-older").disabled = loading || !feed.hasMore || !feed.next;
    $("page-number").textContent = "Page " + (feed.page + 1);
  }

  function turnPage(step) {
    stopTail();
    if (step === 0) feed.page = 0;
    else if (step > 0) {
      if (!feed.next) return;
      feed.cursors[feed.page + 1] = feed.next;
      feed.cursors.length = feed.page + 2;
      feed.page += 1;
    } else feed.page = Math.max(0, feed.page - 1);
    showError("");
    loadFeedPage(renderToken).then(() => $("feed-title").focus());
  }

  function applyFilters(event) {
    event.preventDefault();
    const filters = readForm();
    try {
      apiParams(filters);
    } catch (exc) {
      failed(exc);
      return;
    }
    const target = feedHref(filters);
    feed.resumeTail = $("live-toggle").checked;
    if (location.hash === target) {
      feed.key = null;
      render();
    } else {
      location.hash = target;
    }
  }

  function clearFilters() {
    const form = $("filters");
    form.reset();
    if (me && me.role === "user") $("f-user").value = me.user_id;
    location.hash = "#/events";
  }

  // -- live tail ---------------------------------------------------------------------------

  let tail = null;

  function setLive(state, text) {
    document.body.dataset.live = state;
    $("live-state").textContent = text;
  }

  function stopTail() {
    if (tail) tail.abort();
    tail = null;
    $("live-toggle").checked = false;
    setLive("off", "off");
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }

  async function startTail() {
    if (tail) tail.abort();
    if (feed.page !== 0) {
      feed.page = 0;
      await loadFeedPage(renderToken);
    }
    const control = new AbortController();
    tail = control;
    $("live-toggle").checked = true;
    const signal = control.signal;
    const filters = filtersOf(new URLSearchParams(feed.key || ""));
    let params;
    try {
      params = apiParams(filters);
    } catch (exc) {
      failed(exc);
      stopTail();
      return;
    }
    let cursor = null;
    let wait = 1000;
    let arrived = 0;
    setLive("connecting", "connecting…");
    while (!signal.aborted) {
      try {
        if (!cursor) {
          const tip = await api("/v1/events", { ...params, cursor: "now", order: "asc", limit: "1" }, signal);
          cursor = tip.next_cursor;
          setLive("on", arrived ? arrived + " new" : "following new changes");
        }
        const answer = await api("/v1/events/poll", { cursor, timeout: String(POLL_TIMEOUT_S), limit: "100" }, signal);
        cursor = answer.next_cursor;
        if (answer.events.length) {
          arrived += prependRows(answer.events);
          setLive("on", arrived + " new");
        }
        wait = 1000;
      } catch (exc) {
        if (signal.aborted) break;
        if (exc instanceof ApiError && exc.status === 401) {
          failed(exc);
          break;
        }
        if (exc instanceof ApiError && (exc.status === 410 || exc.status === 400)) cursor = null;
        setLive("retrying", "interrupted (" + exc.message + "); retrying in " + wait / 1000 + " s");
        await sleep(wait, signal);
        wait = Math.min(wait * 2, 30000);
      }
    }
  }

  function prependRows(events) {
    const tbody = $("feed-table").tBodies[0];
    const shown = new Set([...tbody.rows].map((row) => row.dataset.changeId));
    let added = 0;
    for (const event of events) {
      if (shown.has(event.change_id)) continue;
      const row = eventRow(event);
      row.classList.add("fresh");
      tbody.insertBefore(row, tbody.firstChild);
      added += 1;
    }
    while (tbody.rows.length > MAX_LIVE_ROWS) tbody.deleteRow(-1);
    return added;
  }

  // -- one change ------------------------------------------------------------------------

  async function showChange(id, token) {
    showView("change-view");
    $("change-title").textContent = "Change";
    for (const part of ["change-badges", "change-links", "change-meta", "change-paths", "change-previous", "change-current"]) {
      $(part).replaceChildren();
    }
    let event;
    try {
      event = await api("/v1/events/" + seg(id));
    } catch (exc) {
      if (token === renderToken) failed(exc);
      return;
    }
    if (token !== renderToken) return;
    $("change-title").textContent = event.event_type;
    fill($("change-badges"),
      badge(event.action, "action"),
      event.late ? badge("late", "late", "arrived after a newer change of the subject; it did not change the current state") : null,
      badge("criticality " + criticalityText(event.criticality), "crit"),
      event.internal ? null : badge("custom", "custom"));
    $("change-links").replaceChildren(
      el("a", { href: subjectHref(event.subject_type, event.subject_id), id: "link-subject" }, "Subject timeline"),
      el("a", { href: requestHref(event.request_id), id: "link-request" }, "Other changes of this request"),
      el("a", { href: feedHref({ subject_type: event.subject_type, subject_id: event.subject_id }) }, "This subject in the feed"),
      el("a", { href: feed.key !== null ? "#/events" + (feed.key ? "?" + feed.key : "") : "#/events" }, "Back to the feed"));
    const actor = event.actor || {};
    const rows = [
      ["Created", timeNode(event.created_at)],
      ["Subject", el("span", null, event.subject_type + " " + event.subject_id)],
      ["Subject changed at", timeNode(event.subject_changed_at)],
      ["Version", event.version === null ? "—" : String(event.version)],
      ["Subject sequence", String(event.subject_sequence)],
      ["User", actor.user_id || "—"],
      ["Application", actor.application_id || "—"],
      ["API version", actor.api_version || "—"],
      ["Key fingerprint", actor.api_key_fingerprint || "—"],
      ["Request", event.request_id],
      ["Code", String(event.code)],
      ["Source", event.source || "—"],
      ["Change id", event.change_id],
      ["Event id", event.event_id],
      ["Position", "partition " + event.position.partition + ", offset " + event.position.offset],
    ];
    if (event.subject_ref) rows.splice(2, 0, ["Belongs to", event.subject_ref.key + " " + event.subject_ref.id]);
    $("change-meta").replaceChildren(...rows.flatMap(([term, value]) =>
      [el("dt", { text: term }), el("dd", null, value)]));
    $("change-paths").replaceChildren(diffNode(event));
    const paths = changedPaths(event);
    renderPayload($("change-previous"), event.previous_payload, paths, event.action === "create" ? "(none: the subject was created)" : "(none)");
    renderPayload($("change-current"), event.current_payload, paths, event.action === "delete" ? "(none: the subject was deleted)" : "(none)");
    focusTitle("change-title");
  }

  /** The change's field changes (path, old, new), or its patch operations. */
  function diffNode(event) {
    const fields = Object.entries(event.field_changes || {});
    if (fields.length) {
      return el("table", { className: "diff" },
        el("thead", null, el("tr", null, el("th", { scope: "col", text: "Path" }),
          el("th", { scope: "col", text: "Old" }), el("th", { scope: "col", text: "New" }))),
        el("tbody", null, ...fields.map(([path, change]) => el("tr", { dataset: { path } },
          el("td", { dataset: { label: "Path" } }, el("code", { className: "path", text: path })),
          el("td", { className: "old", dataset: { label: "Old" } }, valueNode(change.old)),
          el("td", { className: "new", dataset: { label: "New" } }, valueNode(change.new))))));
    }
    const ops = event.payload_changes || [];
    if (ops.length) {
      return el("ul", { className: "ops" }, ...ops.map((op) => el("li", null,
        el("span", { className: "op op-" + op.op, text: op.op }), " ",
        el("code", { className: "path", text: op.path || "(whole document)" }),
        op.from !== undefined ? el("span", null, " from ", el("code", { text: op.from })) : null,
        "value" in op ? el("span", null, " ", valueNode(op.value)) : null)));
    }
    return el("p", { className: "muted", text: event.action === "custom" ? "A custom event: no state change." : "Nothing changed." });
  }

  // -- JSON with highlighted paths -------------------------------------------------------

  function pointerToken(key) {
    return key.replace(/~/g, "~0").replace(/\//g, "~1");
  }

  /** Lines of pretty-printed JSON, each knowing its JSON Pointer and whether it changed. */
  function jsonLines(value, changed) {
    const lines = [];
    let truncated = false;
    const emit = (depth, parts, path, hit) => {
      if (lines.length >= MAX_JSON_LINES) {
        truncated = true;
        return;
      }
      lines.push({ depth, parts, path, hit });
    };
    const walk = (node, depth, prefix, path, inherited, comma) => {
      if (truncated) return;
      const hit = inherited || changed.has(path);
      const tail = comma ? [[",", "punct"]] : [];
      if (node !== null && typeof node === "object") {
        const isArray = Array.isArray(node);
        const entries = isArray ? node.map((item, i) => [String(i), item]) : Object.entries(node);
        const [open, close] = isArray ? ["[", "]"] : ["{", "}"];
        if (!entries.length) {
          emit(depth, [...prefix, [open + close, "punct"], ...tail], path, hit);
          return;
        }
        emit(depth, [...prefix, [open, "punct"]], path, hit);
        entries.forEach(([key, item], i) => {
          const keyParts = isArray ? [] : [[JSON.stringify(key), "key"], [": ", "punct"]];
          walk(item, depth + 1, keyParts, path + "/" + pointerToken(key), hit, i < entries.length - 1);
        });
        emit(depth, [[close, "punct"], ...tail], path, hit);
      } else {
        emit(depth, [...prefix, [node, "scalar"], ...tail], path, hit);
      }
    };
    walk(value, 0, [], "", false, false);
    return { lines, truncated };
  }

  function scalarNode(value) {
    if (isMasked(value)) return maskedNode(value);
    return el("span", { className: "j-" + kindOf(value), text: JSON.stringify(value) });
  }

  function renderPayload(box, value, changed, emptyText) {
    box.replaceChildren();
    if (value === null || value === undefined) {
      box.append(el("p", { className: "muted", text: emptyText }));
      return;
    }
    let result;
    try {
      result = jsonLines(value, changed);
    } catch (exc) {
      box.append(el("p", { className: "muted", text: "This payload is too deeply nested to display." }));
      return;
    }
    const out = el("div", { className: "json-lines", role: "group" });
    for (const line of result.lines) {
      const row = el("div", { className: "line" + (line.hit ? " hit" : ""), dataset: { path: line.path } });
      row.style.setProperty("--depth", String(line.depth));
      const parts = line.parts.map(([content, kind]) =>
        kind === "scalar" ? scalarNode(content) : el("span", { className: "j-" + kind, text: content }));
      if (line.hit) {
        row.append(el("mark", { className: "changed", dataset: { path: line.path }, title: "changed: " + (line.path || "(whole document)") }, ...parts));
      } else {
        row.append(...parts);
      }
      out.append(row);
    }
    box.append(out);
    if (result.truncated) box.append(el("p", { className: "muted", text: "Only the first " + MAX_JSON_LINES + " lines are shown." }));
  }

  // -- a subject -------------------------------------------------------------------------

  const timeline = { type: null, id: null, after: null };

  async function showSubject(type, id, token) {
    showView("subject-view");
    $("subject-title").textContent = type + " " + id;
    for (const part of ["subject-badges", "subject-links", "subject-state", "timeline"]) $(part).replaceChildren();
    $("timeline-more").hidden = true;
    $("subject-links").replaceChildren(
      el("a", { href: feedHref({ subject_type: type, subject_id: id }) }, "This subject in the feed"),
      el("a", { href: "#/events" }, "Back to the feed"));
    focusTitle("subject-title");
    timeline.type = type;
    timeline.id = id;
    timeline.after = null;
    const base = "/v1/subjects/" + seg(type) + "/" + seg(id);
    const statePromise = me && me.role === "user" ? Promise.resolve(null) : api(base).catch((exc) => exc);
    const historyPromise = api(base + "/history", { limit: String(HISTORY_PAGE) }).catch((exc) => exc);
    const [state, page] = await Promise.all([statePromise, historyPromise]);
    if (token !== renderToken) return;
    renderState(state);
    if (page instanceof Error) {
      if (page instanceof ApiError && page.status === 404) {
        $("timeline").append(el("li", { className: "muted", text: "No changes of this subject within retention for this key." }));
      } else {
        failed(page);
      }
      return;
    }
    appendTimeline(page);
  }

  function renderState(state) {
    const box = $("subject-state");
    if (state === null) {
      box.append(el("p", { className: "muted", text: "The current state is shown to admin keys; below are this key's changes of the subject." }));
      return;
    }
    if (state instanceof Error) {
      if (state instanceof ApiError && state.status === 404) {
        box.append(el("p", { className: "muted", text: "No current state of this subject in this tenant." }));
      } else if (state instanceof ApiError && state.status === 401) {
        failed(state);
      } else {
        box.append(el("p", { className: "error", text: "The current state could not be read: " + state.message }));
      }
      return;
    }
    fill($("subject-badges"),
      state.deleted ? badge("deleted", "deleted") : badge("exists", "action"),
      state.version !== null ? badge("version " + state.version, "crit") : null);
    box.append(el("dl", { className: "meta" },
      el("dt", { text: "Changed at" }), el("dd", null, state.changed_at ? timeNode(state.changed_at) : "—"),
      el("dt", { text: "Changes recorded" }), el("dd", { text: state.sequence === null ? "—" : String(state.sequence) }),
      el("dt", { text: "Latest change" }), el("dd", null, state.latest_change
        ? el("a", { href: changeHref(state.latest_change.change_id), text: state.latest_change.event_type })
        : "past retention")));
    const json = el("div", { className: "json", id: "subject-json" });
    renderPayload(json, state.state, new Set(), state.deleted ? "(deleted)" : "(no state: custom events only)");
    box.append(json);
  }

  function appendTimeline(page) {
    const list = $("timeline");
    for (const event of page.events) {
      const user = event.actor && event.actor.user_id;
      list.append(el("li", { className: "step" + (event.late ? " late" : ""), dataset: { changeId: event.change_id, sequence: String(event.subject_sequence) } },
        el("div", { className: "step-head" },
          el("span", { className: "step-seq", text: "#" + event.subject_sequence }),
          timeNode(event.created_at),
          el("a", { href: changeHref(event.change_id), className: "event-link", text: event.event_type }),
          el("span", { className: "user", text: user ? "by " + user : "" }),
          event.late ? badge("late", "late", "arrived after a newer change; did not change the current state") : null),
        diffNode(event)));
    }
    timeline.after = page.next_after_sequence;
    $("timeline-more").hidden = !page.has_more;
  }

  async function moreTimeline() {
    if (timeline.after === null) return;
    const token = renderToken;
    const base = "/v1/subjects/" + seg(timeline.type) + "/" + seg(timeline.id);
    try {
      const page = await api(base + "/history", { limit: String(HISTORY_PAGE), after_sequence: String(timeline.after) });
      if (token === renderToken) appendTimeline(page);
    } catch (exc) {
      failed(exc);
    }
  }

  // -- one request -----------------------------------------------------------------------

  async function showRequest(id, token) {
    showView("request-view");
    $("request-title").textContent = "Request " + id;
    $("request-summary").textContent = "Loading…";
    $("request-table").tBodies[0].replaceChildren();
    focusTitle("request-title");
    let page;
    try {
      page = await api("/v1/requests/" + seg(id) + "/events");
    } catch (exc) {
      if (token !== renderToken) return;
      $("request-summary").textContent = "";
      failed(exc);
      return;
    }
    if (token !== renderToken) return;
    $("request-summary").textContent = page.count + " change" + (page.count === 1 ? "" : "s") + " made by this request, oldest first.";
    const rows = document.createDocumentFragment();
    for (const event of page.events) rows.append(eventRow(event));
    $("request-table").tBodies[0].replaceChildren(rows);
  }

  // -- start -------------------------------------------------------------------------------

  function start() {
    $("signin-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut(""));
    $("filters").addEventListener("submit", applyFilters);
    $("clear-filters").addEventListener("click", clearFilters);
    $("page-older").addEventListener("click", () => turnPage(1));
    $("page-newer").addEventListener("click", () => turnPage(-1));
    $("page-newest").addEventListener("click", () => turnPage(0));
    $("timeline-more").addEventListener("click", moreTimeline);
    $("live-toggle").addEventListener("change", (event) => {
      if (event.target.checked) startTail();
      else stopTail();
    });
    // on a phone the events come first: the filters start folded
    const phone = window.matchMedia("(max-width: 640px)");
    if (phone.matches && !location.hash.includes("?")) $("filters-box").open = false;
    phone.addEventListener("change", (event) => {
      $("filters-box").open = !event.matches;
    });
    openRowOnClick($("feed-table").tBodies[0]);
    openRowOnClick($("request-table").tBodies[0]);
    window.addEventListener("hashchange", () => {
      if (location.hash.startsWith("#/") || location.hash === "") render();
    });
    if (!apiKey()) {
      showView("signin-view");
      $("api-key").focus();
      return;
    }
    $("nav").hidden = false;
    render();
    api("/v1/me").then(showIdentity).catch(failed);
  }

  start();
})();
